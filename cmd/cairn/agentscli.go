package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/cairn-dev/cairn/agent"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

const agentsHelp = `Usage:
  cairn agents export AGENT SESSION [--out FILE]   the whole history as JSONL, oldest first
  cairn agents usage AGENT [SESSION]               storage bytes, hot and archived
  cairn agents archive AGENT SESSION               archive the session now (it expires;
                                                   the next request restores it)
  cairn agents delete AGENT SESSION                delete the session forever, archive included

Exit codes: 0 ok, 1 failure, unreachable or a truncated export, 2 usage,
3 not found, 4 unauthorized or forbidden, 5 rejected, 6 conflict (busy),
7 unavailable (retry).
`

// runAgents runs the agents client commands.
func (m *Main) runAgents(ctx context.Context, args []string) int {
	fs, cf := m.clientFlagSet("agents", agentsHelp)
	out := fs.String("out", "", "export: write to this file instead of standard output")
	if err := fs.Parse(reorder(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	a := fs.Args()
	usageErr := func() int { fmt.Fprint(m.Stderr, agentsHelp); return ExitUsage }
	if len(a) < 2 {
		return usageErr()
	}
	c := cairnhttp.NewClient(cf.url, cf.token)
	base := "/v1/agents/" + cairnhttp.Segment(a[1])
	session := ""
	if len(a) == 3 {
		session = base + "/" + cairnhttp.Segment(a[2])
	}
	var err error
	switch {
	case a[0] == "export" && session != "":
		err = m.exportSession(ctx, c, session, *out)
	case a[0] == "usage" && (len(a) == 2 || session != ""):
		path := base + "/usage"
		if session != "" {
			path = session + "/usage"
		}
		var raw []byte
		if raw, err = c.Do(ctx, "GET", path, nil, ""); err == nil {
			if cf.json {
				m.Stdout.Write(raw)
				break
			}
			tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
			if session != "" {
				var u agent.SessionUsage
				json.Unmarshal(raw, &u)
				fmt.Fprintln(tw, "MESSAGES\tHOT\tARCHIVED\tHOT BYTES\tARCHIVED BYTES\tCHUNKS\tTOTAL BYTES")
				fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\n", u.Messages, u.HotMessages, u.ArchivedMessages, u.HotBytes, u.ArchivedBytes, u.ArchivedChunks, u.TotalBytes)
			} else {
				var u agent.AgentUsage
				json.Unmarshal(raw, &u)
				fmt.Fprintln(tw, "AGENT\tHOT BYTES\tARCHIVED BYTES\tTOTAL BYTES")
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", u.Agent, u.HotBytes, u.ArchivedBytes, u.TotalBytes)
			}
			tw.Flush()
		}
	case a[0] == "archive" && session != "":
		var raw []byte
		if raw, err = c.Do(ctx, "POST", session+"/archive", nil, ""); err == nil {
			if cf.json {
				m.Stdout.Write(raw)
				break
			}
			var x agent.Expiry
			json.Unmarshal(raw, &x)
			fmt.Fprintf(m.Stdout, "archived %d messages in %d chunks (%d bytes) at %s\n", x.Messages, x.Chunks, x.Bytes, x.Manifest)
		}
	case a[0] == "delete" && session != "":
		_, err = c.Do(ctx, "DELETE", session, nil, "")
	default:
		return usageErr()
	}
	if err != nil {
		fmt.Fprintln(m.Stderr, "cairn agents "+a[0]+":", err)
		return exitCode(err)
	}
	return ExitOK
}

// exportSession streams a session's export to path (standard output if
// empty), and fails if it holds fewer messages than the server counted
// when it began (the export broke off).
func (m *Main) exportSession(ctx context.Context, c *cairnhttp.Client, session, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.URL+session+"/export", nil)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := *c.HTTP
	hc.Timeout = 0 // an export takes as long as it takes
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		var eb cairnhttp.ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
			return &cairnhttp.APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &cairnhttp.APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: string(b)}
	}
	var w io.Writer = m.Stdout
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	lines := int64(0)
	r := bufio.NewReaderSize(resp.Body, 1<<16)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 || err == bufio.ErrBufferFull {
			bw.Write(line)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			lines++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if want, err := strconv.ParseInt(resp.Header.Get("X-Message-Count"), 10, 64); err == nil && lines < want {
		return fmt.Errorf("export truncated: %d messages, the session had %d", lines, want)
	}
	fmt.Fprintf(m.Stderr, "%d messages\n", lines)
	return nil
}
