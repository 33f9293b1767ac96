package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	cairnhttp "github.com/cairn-dev/cairn/http"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	url, token string
	json       bool
}

func (m *Main) clientFlagSet(name, help string) (*flag.FlagSet, *clientFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	cf := &clientFlags{}
	defURL := m.Getenv("CAIRN_URL")
	if defURL == "" {
		defURL = "http://127.0.0.1:8420"
	}
	fs.StringVar(&cf.url, "url", defURL, "server URL (env CAIRN_URL)")
	fs.StringVar(&cf.token, "token", m.Getenv("CAIRN_TOKEN"), "bearer token (env CAIRN_TOKEN)")
	fs.BoolVar(&cf.json, "json", false, "print JSON instead of text")
	fs.Usage = func() { fmt.Fprint(m.Stderr, help, "\nFlags:\n"); fs.PrintDefaults() }
	return fs, cf
}

const clientHelp = `Usage:
  cairn kv get NS NAME KEY            print a value
  cairn kv put NS NAME KEY [VALUE]    store VALUE (or standard input)
  cairn kv delete NS NAME KEY
  cairn kv list NS NAME [--prefix P] [--limit N]
  cairn call NS NAME METHOD [JSON]    call an RPC method
  cairn sql NS NAME "SQL" [ARGS...]   run one SQL statement (args: JSON values)
  cairn objects list NS [--after ID] [--limit N]
  cairn objects inspect NS NAME
  cairn objects delete NS NAME        delete all of an object's storage
  cairn alarm get NS NAME
  cairn alarm set NS NAME TIME        TIME: RFC 3339, or a duration like 30s from now
  cairn alarm delete NS NAME
  cairn usage

Exit codes: 0 ok, 1 failure or unreachable, 2 usage, 3 not found,
4 unauthorized or forbidden, 5 rejected (invalid or too large), 6 conflict,
7 unavailable (retry).
`

func (m *Main) runClient(ctx context.Context, cmd string, args []string) int {
	fs, cf := m.clientFlagSet(cmd, clientHelp)
	prefix := fs.String("prefix", "", "kv list: only keys with this prefix")
	limit := fs.Int("limit", 100, "list: at most this many")
	after := fs.String("after", "", "objects list: start after this ID")
	if err := fs.Parse(reorder(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	a := fs.Args()
	c := cairnhttp.NewClient(cf.url, cf.token)
	usageErr := func() int { fmt.Fprint(m.Stderr, clientHelp); return ExitUsage }
	need := func(n int) bool { return len(a) == n }
	var err error
	switch cmd {
	case "kv":
		if len(a) < 3 {
			return usageErr()
		}
		obj := cairnhttp.ObjectPath("/v1/admin/objects", a[1], a[2])
		switch {
		case a[0] == "get" && need(4):
			var b []byte
			if b, err = c.Do(ctx, "GET", obj+"/kv/"+escapeKey(a[3]), nil, ""); err == nil {
				m.Stdout.Write(b) // the bytes as stored
			}
		case a[0] == "put" && (need(4) || need(5)):
			var v []byte
			if len(a) == 5 {
				v = []byte(a[4])
			} else if v, err = io.ReadAll(m.Stdin); err != nil {
				break
			}
			_, err = c.Do(ctx, "PUT", obj+"/kv/"+escapeKey(a[3]), v, "application/octet-stream")
		case a[0] == "delete" && need(4):
			var out struct{ Deleted bool }
			if err = c.JSON(ctx, "DELETE", obj+"/kv/"+escapeKey(a[3]), nil, &out); err == nil && !out.Deleted {
				fmt.Fprintln(m.Stderr, "no such key")
				return ExitNotFound
			}
		case a[0] == "list" && need(3):
			q := url.Values{"limit": {strconv.Itoa(*limit)}}
			if *prefix != "" {
				q.Set("prefix", *prefix)
			}
			var out struct {
				Entries []struct{ Key, Value, Encoding string }
			}
			var raw []byte
			if raw, err = c.Do(ctx, "GET", obj+"/kv?"+q.Encode(), nil, ""); err == nil {
				if cf.json {
					m.Stdout.Write(raw)
					break
				}
				json.Unmarshal(raw, &out)
				tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
				for _, e := range out.Entries {
					v := e.Value
					if e.Encoding != "" {
						v = "(" + e.Encoding + ") " + v
					}
					if len(v) > 80 {
						v = v[:77] + "..."
					}
					fmt.Fprintf(tw, "%s\t%s\n", e.Key, v)
				}
				tw.Flush()
			}
		default:
			return usageErr()
		}
	case "call":
		if len(a) != 3 && len(a) != 4 {
			return usageErr()
		}
		var body []byte
		if len(a) == 4 {
			body = []byte(a[3])
		}
		var b []byte
		if b, err = c.Do(ctx, "POST", cairnhttp.ObjectPath("/v1/objects", a[0], a[1])+"/rpc/"+url.PathEscape(a[2]), body, "application/json"); err == nil {
			m.Stdout.Write(b)
		}
	case "sql":
		if len(a) < 3 {
			return usageErr()
		}
		req := cairnhttp.SQLRequest{SQL: a[2]}
		for _, s := range a[3:] {
			req.Args = append(req.Args, parseArg(s))
		}
		var raw []byte
		body, _ := json.Marshal(req)
		if raw, err = c.Do(ctx, "POST", cairnhttp.ObjectPath("/v1/admin/objects", a[0], a[1])+"/sql", body, "application/json"); err == nil {
			if cf.json {
				m.Stdout.Write(raw)
				break
			}
			var out cairnhttp.SQLResponse
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.UseNumber()
			dec.Decode(&out)
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			if len(out.Columns) > 0 {
				fmt.Fprintln(tw, strings.Join(out.Columns, "\t"))
			}
			for _, row := range out.Rows {
				cells := make([]string, len(row))
				for i, v := range row {
					cells[i] = fmt.Sprint(v)
					if v == nil {
						cells[i] = "NULL"
					}
				}
				fmt.Fprintln(tw, strings.Join(cells, "\t"))
			}
			tw.Flush()
			fmt.Fprintf(m.Stderr, "(%d rows read, %d written)\n", out.RowsRead, out.RowsWritten)
		}
	case "objects":
		if len(a) < 2 {
			return usageErr()
		}
		switch {
		case a[0] == "list" && need(2):
			q := url.Values{"limit": {strconv.Itoa(*limit)}}
			if *after != "" {
				q.Set("after", *after)
			}
			var raw []byte
			if raw, err = c.Do(ctx, "GET", "/v1/admin/namespaces/"+url.PathEscape(a[1])+"/objects?"+q.Encode(), nil, ""); err == nil {
				if cf.json {
					m.Stdout.Write(raw)
					break
				}
				var out struct {
					Objects []cairnhttp.ObjectJSON
					Next    string
				}
				json.Unmarshal(raw, &out)
				tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tID\tBYTES\tLAST ACTIVE\tALARM")
				for _, o := range out.Objects {
					alarm := "-"
					if o.Alarm != nil {
						alarm = o.Alarm.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", o.Name, o.ID[:16]+"…", o.Bytes, o.LastActive.Format(time.RFC3339), alarm)
				}
				tw.Flush()
				if out.Next != "" {
					fmt.Fprintf(m.Stderr, "more: --after %s\n", out.Next)
				}
			}
		case a[0] == "inspect" && need(3):
			var raw []byte
			if raw, err = c.Do(ctx, "GET", cairnhttp.ObjectPath("/v1/admin/objects", a[1], a[2]), nil, ""); err == nil {
				m.Stdout.Write(raw)
			}
		case a[0] == "delete" && need(3):
			_, err = c.Do(ctx, "DELETE", cairnhttp.ObjectPath("/v1/admin/objects", a[1], a[2]), nil, "")
		default:
			return usageErr()
		}
	case "alarm":
		if len(a) < 3 {
			return usageErr()
		}
		p := cairnhttp.ObjectPath("/v1/admin/objects", a[1], a[2]) + "/alarm"
		var raw []byte
		switch {
		case a[0] == "get" && need(3):
			raw, err = c.Do(ctx, "GET", p, nil, "")
		case a[0] == "set" && need(4):
			at, perr := parseWhen(a[3], time.Now())
			if perr != nil {
				fmt.Fprintln(m.Stderr, "cairn alarm set:", perr)
				return ExitUsage
			}
			body, _ := json.Marshal(map[string]any{"at": at})
			raw, err = c.Do(ctx, "PUT", p, body, "application/json")
		case a[0] == "delete" && need(3):
			raw, err = c.Do(ctx, "DELETE", p, nil, "")
		default:
			return usageErr()
		}
		if err == nil {
			m.Stdout.Write(raw)
		}
	case "usage":
		var raw []byte
		if raw, err = c.Do(ctx, "GET", "/v1/admin/usage", nil, ""); err == nil {
			if cf.json {
				m.Stdout.Write(raw)
				break
			}
			var out struct{ Namespaces []cairnhttp.NamespaceJSON }
			json.Unmarshal(raw, &out)
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAMESPACE\tOBJECTS\tBYTES\tREQUESTS\tROWS READ\tROWS WRITTEN")
			for _, n := range out.Namespaces {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\n", n.Name, n.Objects, n.Bytes, n.Requests, n.RowsRead, n.RowsWritten)
			}
			tw.Flush()
		}
	}
	if err != nil {
		fmt.Fprintln(m.Stderr, "cairn "+cmd+":", err)
		return exitCode(err)
	}
	return ExitOK
}

// escapeKey escapes a key as one path segment (the server decodes it).
func escapeKey(k string) string { return cairnhttp.Segment(k) }

// parseArg reads a SQL argument: a JSON value (numbers kept exact), or else
// the word itself as a string.
func parseArg(s string) any {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || dec.More() {
		return s
	}
	return v
}

// parseWhen reads an RFC 3339 time or a duration from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
}

// exitCode maps an error to the documented exit codes.
func exitCode(err error) int {
	switch cairnhttp.ErrorCode(err) {
	case "":
		return ExitFailure
	case "not_found":
		return ExitNotFound
	case "unauthorized", "forbidden":
		return ExitAuth
	case "invalid", "too_large", "method_not_allowed":
		return ExitRejected
	case "conflict":
		return ExitConflict
	case "unavailable", "timeout":
		return ExitUnavailbl
	}
	return ExitFailure
}

// reorder moves flags after positional arguments to the front, so that
// `cairn kv list kv box --prefix a` works like `cairn kv list --prefix a kv box`.
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && takesValue(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func takesValue(flagArg string) bool {
	name := strings.TrimLeft(flagArg, "-")
	switch name {
	case "json", "h", "help":
		return false
	}
	return true
}
