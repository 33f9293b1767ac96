package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cairn-dev/cairn/coord"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// The coordination commands (lock, leader, presence, queue) call the REST
// routes of the coord classes (docs/coordination.md), print a line or a
// table for people and the server's JSON with --json, and exit with the
// client codes: 6 when another holds the lock, a token is stale or a
// candidate was not elected; 7 when a wait ran out.

const coordHelp = `Usage:
  cairn lock acquire RESOURCE --owner ID --ttl 30s [--wait 10s] [--request-id R]
  cairn lock renew RESOURCE --owner ID --fencing-token N --ttl 30s
  cairn lock release RESOURCE --owner ID --fencing-token N [--request-id R]
  cairn lock cancel RESOURCE --owner ID --request-id R
  cairn lock inspect RESOURCE
  cairn locks acquire|renew|release|cancel|inspect NAME ...   the same, on the lock table (/v1/locks)
  cairn locks list [--after NAME] [--limit N]   the lock table's locks by name

  cairn leader campaign GROUP --candidate ID --ttl 30s [--wait 10s] [--request-id R]
  cairn leader renew GROUP --candidate ID --term N --ttl 30s
  cairn leader resign GROUP --candidate ID --term N [--request-id R]
  cairn leader get GROUP

  cairn presence heartbeat ROOM --member ID --ttl 30s [--metadata JSON]
  cairn presence leave ROOM --member ID
  cairn presence list ROOM

  cairn queue enqueue NAME [BODY] [--delay 5s] [--dedup-key K]   BODY: JSON (or standard input)
  cairn queue claim NAME [--max N] [--visibility 30s] [--request-id R]
  cairn queue ack NAME --id N --receipt R
  cairn queue nack NAME --id N --receipt R [--delay 5s] [--reason TEXT]
  cairn queue config NAME [--max-attempts N] [--backoff 1s] [--max-backoff 5m]
  cairn queue stats NAME
  cairn queue dead NAME [--after ID] [--limit N]

Durations are Go durations (500ms, 30s, 5m). --fencing-token is the token
acquire printed; --token is the server's bearer token, as for every client
command (env CAIRN_TOKEN). Without --request-id, acquire
and campaign send one of their own and print it if the outcome is unknown
(the connection broke): retry with it to get the same answer, or cancel
with it to be sure not to hold the lock.

Exit codes: 0 ok, 1 failure or unreachable, 2 usage, 3 not found,
4 unauthorized or forbidden, 5 rejected (invalid or too large),
6 conflict (held by another, stale token or receipt, not elected),
7 timeout (a --wait ran out) or unavailable (retry).
`

// coordVerb is one coordination subcommand: its positional arguments
// after the resource name, the flags it takes and what it does.
type coordVerb struct {
	noName bool     // takes no NAME (nor arguments): lists the namespace
	args   int      // positional arguments after NAME (at most)
	flags  []string // names from coordFlags
	need   []string // required flags
	run    func(ctx context.Context, c *coordCmd) error
}

// coordCmd is a parsed coordination command.
type coordCmd struct {
	m    *Main
	ns   string // the namespace: lock, leader, presence, queue
	name string // the object: resource, group, room or queue name
	args []string
	cf   *clientFlags
	c    *cairnhttp.Client
	set  map[string]bool

	owner, candidate, member, requestID, metadata, dedupKey, receipt, reason string
	ttl, wait, delay, visibility, backoff, maxBackoff                        time.Duration
	token, term, id, after                                                   int64
	max, limit, maxAttempts                                                  int
	afterName                                                                string // --after of locks list
}

var coordVerbs = map[string]map[string]coordVerb{
	"lock": {
		"acquire": {flags: []string{"owner", "ttl", "wait", "request-id"}, need: []string{"owner", "ttl"}, run: lockAcquire},
		"renew":   {flags: []string{"owner", "fencing-token", "ttl"}, need: []string{"owner", "fencing-token", "ttl"}, run: lockRenew},
		"release": {flags: []string{"owner", "fencing-token", "request-id"}, need: []string{"owner", "fencing-token"}, run: lockRelease},
		"cancel":  {flags: []string{"owner", "request-id"}, need: []string{"owner", "request-id"}, run: leaseCancel},
		"inspect": {run: lockInspect},
	},
	"leader": {
		"campaign": {flags: []string{"candidate", "ttl", "wait", "request-id"}, need: []string{"candidate", "ttl"}, run: leaderCampaign},
		"renew":    {flags: []string{"candidate", "term", "ttl"}, need: []string{"candidate", "term", "ttl"}, run: leaderRenew},
		"resign":   {flags: []string{"candidate", "term", "request-id"}, need: []string{"candidate", "term"}, run: leaderResign},
		"cancel":   {flags: []string{"candidate", "request-id"}, need: []string{"candidate", "request-id"}, run: leaseCancel},
		"get":      {run: leaderGet},
	},
	"presence": {
		"heartbeat": {flags: []string{"member", "ttl", "metadata"}, need: []string{"member", "ttl"}, run: presenceHeartbeat},
		"leave":     {flags: []string{"member"}, need: []string{"member"}, run: presenceLeave},
		"list":      {run: presenceList},
	},
	"queue": {
		"enqueue": {args: 1, flags: []string{"delay", "dedup-key"}, run: queueEnqueue},
		"claim":   {flags: []string{"max", "visibility", "request-id"}, run: queueClaim},
		"ack":     {flags: []string{"id", "receipt"}, need: []string{"id", "receipt"}, run: queueAck},
		"nack":    {flags: []string{"id", "receipt", "delay", "reason"}, need: []string{"id", "receipt"}, run: queueNack},
		"config":  {flags: []string{"max-attempts", "backoff", "max-backoff"}, run: queueConfig},
		"stats":   {run: queueStats},
		"dead":    {flags: []string{"after", "limit"}, run: queueDead},
	},
}

// The lock table takes the verbs of a lock object on its locks, and lists
// them.
func init() {
	coordVerbs["locks"] = maps.Clone(coordVerbs["lock"])
	coordVerbs["locks"]["list"] = coordVerb{noName: true, flags: []string{"after", "limit"}, run: locksList}
}

// define declares the flag name on fs, bound to its field of c.
func (c *coordCmd) define(fs *flag.FlagSet, name string) {
	switch name {
	case "owner":
		fs.StringVar(&c.owner, name, "", "who holds the lock: unique per client (1 to 256 bytes)")
	case "candidate":
		fs.StringVar(&c.candidate, name, "", "who campaigns: unique per process (1 to 256 bytes)")
	case "member":
		fs.StringVar(&c.member, name, "", "the member id (1 to 256 bytes)")
	case "request-id":
		fs.StringVar(&c.requestID, name, "", "makes a retry return the same answer (within 15 min)")
	case "metadata":
		fs.StringVar(&c.metadata, name, "", "JSON metadata, up to 16 KiB (absent: unchanged)")
	case "dedup-key":
		fs.StringVar(&c.dedupKey, name, "", "enqueue once per key within 15 minutes")
	case "receipt":
		fs.StringVar(&c.receipt, name, "", "the receipt the claim returned")
	case "reason":
		fs.StringVar(&c.reason, name, "", "why (kept if the message goes to the dead letters)")
	case "ttl":
		fs.DurationVar(&c.ttl, name, 0, "lease length, 1ms to 24h")
	case "wait":
		fs.DurationVar(&c.wait, name, 0, "wait in line this long if held (0: fail at once; at most 10m)")
	case "delay":
		fs.DurationVar(&c.delay, name, 0, "not claimable before this long from now")
	case "visibility":
		fs.DurationVar(&c.visibility, name, 0, "hide claimed messages from others this long (default 30s)")
	case "backoff":
		fs.DurationVar(&c.backoff, name, 0, "first retry delay after a nack")
	case "max-backoff":
		fs.DurationVar(&c.maxBackoff, name, 0, "longest retry delay")
	case "fencing-token":
		fs.Int64Var(&c.token, name, 0, "the fencing token acquire returned")
	case "term":
		fs.Int64Var(&c.term, name, 0, "the term campaign returned")
	case "id":
		fs.Int64Var(&c.id, name, 0, "the message id")
	case "after":
		if c.ns == "locks" {
			fs.StringVar(&c.afterName, name, "", "only locks whose names sort after this one (the cursor a page ends with)")
		} else {
			fs.Int64Var(&c.after, name, 0, "only ids greater than this")
		}
	case "max":
		fs.IntVar(&c.max, name, 0, "claim up to this many messages, 1 to 100 (default 1)")
	case "limit":
		fs.IntVar(&c.limit, name, 0, "at most this many, 1 to 1000 (default 100)")
	case "max-attempts":
		fs.IntVar(&c.maxAttempts, name, 0, "deliveries before a message goes to the dead letters")
	default:
		panic("coord: no flag " + name)
	}
}

// runCoord runs `cairn lock|locks|leader|presence|queue VERB [NAME] ...`.
func (m *Main) runCoord(ctx context.Context, ns string, args []string) int {
	usageErr := func(format string, a ...any) int {
		if format != "" {
			fmt.Fprintf(m.Stderr, "cairn %s: "+format+"\n\n", append([]any{ns}, a...)...)
		}
		fmt.Fprint(m.Stderr, coordHelp)
		return ExitUsage
	}
	if len(args) == 0 {
		return usageErr("")
	}
	if a := args[0]; a == "help" || a == "-h" || a == "--help" {
		fmt.Fprint(m.Stdout, coordHelp)
		return ExitOK
	}
	verbName := args[0]
	verb, ok := coordVerbs[ns][verbName]
	if !ok {
		return usageErr("unknown subcommand %q", verbName)
	}
	fs, cf := m.clientFlagSet(ns+" "+verbName, coordHelp)
	c := &coordCmd{m: m, ns: ns, cf: cf, set: map[string]bool{}}
	for _, f := range verb.flags {
		c.define(fs, f)
	}
	if err := fs.Parse(reorder(args[1:])); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	fs.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	pos := fs.Args()
	switch {
	case verb.noName:
		if len(pos) > 0 {
			return usageErr("%s takes no name", verbName)
		}
	case len(pos) < 1 || len(pos) > 1+verb.args:
		return usageErr("%s takes a name%s", verbName, map[bool]string{true: " and at most one argument", false: ""}[verb.args > 0])
	default:
		c.name, c.args = pos[0], pos[1:]
	}
	for _, f := range verb.need {
		if !c.set[f] {
			return usageErr("%s needs --%s", verbName, f)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ttl", c.ttl}, {"wait", c.wait}, {"delay", c.delay}, {"visibility", c.visibility}, {"backoff", c.backoff}, {"max-backoff", c.maxBackoff}} {
		if c.set[d.name] && (d.v < 0 || d.v%time.Millisecond != 0 || d.name == "ttl" && d.v == 0) {
			return usageErr("--%s %s: want a positive whole number of milliseconds", d.name, d.v)
		}
	}
	c.c = cairnhttp.NewClient(cf.url, cf.token)
	// A wait can run longer than the client's default timeout; the
	// server answers timeout (504) at the deadline, so leave it room.
	c.c.HTTP.Timeout = max(c.c.HTTP.Timeout, c.wait+30*time.Second)
	if err := verb.run(ctx, c); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		fmt.Fprintf(m.Stderr, "cairn %s %s: %v\n", ns, verbName, err)
		return exitCode(err)
	}
	return ExitOK
}

// exitError is an exit code whose message was already printed.
type exitError int

func (e exitError) Error() string { return "exit " + strconv.Itoa(int(e)) }

// path returns the REST path of op on the command's object, or on the
// lock of the lock table.
func (c *coordCmd) path(op string) string {
	if c.ns == "locks" {
		p := "/v1/locks/" + url.PathEscape(c.name)
		if op != "" {
			p += "/" + op
		}
		return p
	}
	return cairnhttp.ObjectPath("/v1/objects", c.ns, c.name) + "/" + op
}

// call sends v to the route op (POST, or GET if v is nil) and decodes the
// answer into out. With --json it prints the answer as the server sent it
// and returns printed true: the caller prints nothing more.
func (c *coordCmd) call(ctx context.Context, op string, v, out any) (printed bool, err error) {
	return c.callPath(ctx, c.path(op), v, out)
}

// callPath is call on the route at path.
func (c *coordCmd) callPath(ctx context.Context, path string, v, out any) (printed bool, err error) {
	method, body := "GET", []byte(nil)
	if v != nil {
		method = "POST"
		if body, err = json.Marshal(v); err != nil {
			return false, err
		}
	}
	raw, err := c.c.Do(ctx, method, path, body, "application/json")
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return false, fmt.Errorf("decode answer of %s: %w", path, err)
	}
	if c.cf.json {
		c.m.Stdout.Write(raw)
		if len(raw) > 0 && raw[len(raw)-1] != '\n' {
			fmt.Fprintln(c.m.Stdout)
		}
		return true, nil
	}
	return false, nil
}

func (c *coordCmd) printf(format string, a ...any) { fmt.Fprintf(c.m.Stdout, format, a...) }

// unknownOutcome explains what a request whose answer never came means,
// for the commands where it matters.
func (c *coordCmd) unknownOutcome(err error, what, cancel string) error {
	if cairnhttp.ErrorCode(err) != "" || errors.Is(err, context.Canceled) && c.set["wait"] {
		return err // an answer; or the user interrupted a wait, and the server dropped it
	}
	return fmt.Errorf("%w\nthe outcome is unknown: you may %s. Retry with --request-id %s to get the same answer, or run\n  %s",
		err, what, c.requestID, cancel+" --request-id "+c.requestID)
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

// ms converts a flag duration to the API's milliseconds.
func ms(d time.Duration) int64 { return d.Milliseconds() }

// when formats Unix milliseconds for people.
func when(unixMs int64) string {
	if unixMs == 0 {
		return "-"
	}
	return time.UnixMilli(unixMs).UTC().Format("2006-01-02T15:04:05.000Z")
}

// Lock.

func lockAcquire(ctx context.Context, c *coordCmd) error {
	if c.requestID == "" {
		c.requestID = newRequestID()
	}
	var g coord.AcquireResult
	printed, err := c.call(ctx, "acquire", coord.AcquireArgs{Owner: c.owner, TTLMs: ms(c.ttl), WaitMs: ms(c.wait), RequestID: c.requestID}, &g)
	if err != nil {
		return c.unknownOutcome(err, "hold the lock", fmt.Sprintf("cairn lock cancel %s --owner %s", shellQuote(c.name), shellQuote(c.owner)))
	}
	if !printed {
		c.printf("acquired %s: token %d, owner %s, expires %s\n", c.name, g.Token, g.Owner, when(g.ExpiresAt))
	}
	return nil
}

func lockRenew(ctx context.Context, c *coordCmd) error {
	var g coord.AcquireResult
	printed, err := c.call(ctx, "renew", coord.RenewArgs{Owner: c.owner, Token: c.token, TTLMs: ms(c.ttl)}, &g)
	if err == nil && !printed {
		c.printf("renewed %s: token %d, expires %s\n", c.name, g.Token, when(g.ExpiresAt))
	}
	return err
}

func lockRelease(ctx context.Context, c *coordCmd) error {
	var r coord.ReleaseResult
	printed, err := c.call(ctx, "release", coord.ReleaseArgs{Owner: c.owner, Token: c.token, RequestID: c.requestID}, &r)
	if err == nil && !printed {
		c.printf("released %s (token %d)\n", c.name, c.token)
	}
	return err
}

// leaseCancel withdraws an acquire (or a campaign) by its request id.
func leaseCancel(ctx context.Context, c *coordCmd) error {
	owner := c.owner
	if c.ns == "leader" {
		owner = c.candidate
	}
	var r coord.CancelResult
	printed, err := c.call(ctx, "cancel", coord.CancelArgs{Owner: owner, RequestID: c.requestID}, &r)
	if err == nil && !printed {
		c.printf("canceled %d waiting request(s)", r.Canceled)
		if r.Released {
			c.printf("; released the grant it got")
		}
		c.printf("\n")
	}
	return err
}

func lockInspect(ctx context.Context, c *coordCmd) error {
	var info coord.LockInfo
	printed, err := c.call(ctx, "", nil, &info)
	if err != nil || printed {
		return err
	}
	if h := info.Holder; h != nil {
		c.printf("holder:     %s (token %d, since %s, expires %s)\n", h.Owner, h.Token, when(h.AcquiredAt), when(h.ExpiresAt))
	} else {
		c.printf("holder:     none\n")
	}
	c.printf("last token: %d\n", info.LastToken)
	printWaiters(c, "waiters", info.Waiters)
	return nil
}

// locksList prints a page of the lock table's locks, and the --after of
// the next page (on standard error) if there is one.
func locksList(ctx context.Context, c *coordCmd) error {
	q := url.Values{}
	if c.set["after"] {
		q.Set("after", c.afterName)
	}
	if c.set["limit"] {
		q.Set("limit", strconv.Itoa(c.limit))
	}
	p := "/v1/locks"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var r coord.TableListResult
	printed, err := c.callPath(ctx, p, nil, &r)
	if err != nil || printed {
		return err
	}
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tHOLDER\tTOKEN\tEXPIRES\tWAITERS")
	for _, l := range r.Locks {
		holder, token, expires := "(free)", fmt.Sprintf("(last %d)", l.LastToken), "-"
		if h := l.Holder; h != nil {
			holder, token, expires = h.Owner, strconv.FormatInt(h.Token, 10), when(h.ExpiresAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", l.Name, holder, token, expires, l.Waiters)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Next != "" {
		fmt.Fprintf(c.m.Stderr, "more: --after %s\n", shellQuote(r.Next))
	}
	return nil
}

func printWaiters(c *coordCmd, what string, ws []coord.Waiter) {
	c.printf("%-11s %d\n", what+":", len(ws))
	if len(ws) == 0 {
		return
	}
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SEQ\tOWNER\tREQUEST ID\tDEADLINE")
	for _, w := range ws {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", w.Seq, w.Owner, w.RequestID, when(w.Deadline))
	}
	tw.Flush()
}

// Leader.

func leaderCampaign(ctx context.Context, c *coordCmd) error {
	if c.requestID == "" {
		c.requestID = newRequestID()
	}
	var r coord.CampaignResult
	printed, err := c.call(ctx, "campaign", coord.CampaignArgs{Candidate: c.candidate, TTLMs: ms(c.ttl), WaitMs: ms(c.wait), RequestID: c.requestID}, &r)
	if err != nil {
		return c.unknownOutcome(err, "be the leader", fmt.Sprintf("cairn leader cancel %s --candidate %s", shellQuote(c.name), shellQuote(c.candidate)))
	}
	if !printed {
		if r.Elected {
			c.printf("elected %s in %s: term %d, expires %s\n", r.Leader, c.name, r.Term, when(r.ExpiresAt))
		} else {
			c.printf("not elected in %s: %s\n", c.name, leaderLine(r))
		}
	}
	if !r.Elected {
		return exitError(ExitConflict)
	}
	return nil
}

func leaderLine(r coord.CampaignResult) string {
	if r.Leader == "" {
		return fmt.Sprintf("no leader (last term %d)", r.Term)
	}
	return fmt.Sprintf("the leader is %s, term %d, expires %s", r.Leader, r.Term, when(r.ExpiresAt))
}

func leaderRenew(ctx context.Context, c *coordCmd) error {
	var r coord.CampaignResult
	printed, err := c.call(ctx, "renew", coord.LeaderRenewArgs{Candidate: c.candidate, Term: c.term, TTLMs: ms(c.ttl)}, &r)
	if err == nil && !printed {
		c.printf("renewed %s in %s: term %d, expires %s\n", r.Leader, c.name, r.Term, when(r.ExpiresAt))
	}
	return err
}

func leaderResign(ctx context.Context, c *coordCmd) error {
	var r coord.ResignResult
	printed, err := c.call(ctx, "resign", coord.ResignArgs{Candidate: c.candidate, Term: c.term, RequestID: c.requestID}, &r)
	if err == nil && !printed {
		c.printf("resigned from %s (term %d)\n", c.name, c.term)
	}
	return err
}

func leaderGet(ctx context.Context, c *coordCmd) error {
	var info coord.LeaderInfo
	printed, err := c.call(ctx, "", nil, &info)
	if err != nil || printed {
		return err
	}
	c.printf("%s: %s\n", c.name, leaderLine(info.CampaignResult))
	if len(info.Candidates) > 0 {
		printWaiters(c, "waiting", info.Candidates)
	}
	return nil
}

// Presence.

func presenceHeartbeat(ctx context.Context, c *coordCmd) error {
	args := coord.HeartbeatArgs{Member: c.member, TTLMs: ms(c.ttl)}
	if c.set["metadata"] {
		if !json.Valid([]byte(c.metadata)) {
			fmt.Fprintf(c.m.Stderr, "cairn presence heartbeat: --metadata is not JSON: %s\n", c.metadata)
			return exitError(ExitUsage)
		}
		args.Metadata = json.RawMessage(c.metadata)
	}
	var r coord.HeartbeatResult
	printed, err := c.call(ctx, "heartbeat", args, &r)
	if err == nil && !printed {
		verb := "present in"
		if r.Joined {
			verb = "joined"
		}
		c.printf("%s %s %s until %s\n", c.member, verb, c.name, when(r.ExpiresAt))
	}
	return err
}

func presenceLeave(ctx context.Context, c *coordCmd) error {
	var r coord.LeaveResult
	printed, err := c.call(ctx, "leave", coord.LeaveArgs{Member: c.member}, &r)
	if err == nil && !printed {
		if r.Left {
			c.printf("%s left %s\n", c.member, c.name)
		} else {
			c.printf("%s was not in %s\n", c.member, c.name)
		}
	}
	return err
}

func presenceList(ctx context.Context, c *coordCmd) error {
	var l coord.PresenceList
	printed, err := c.call(ctx, "", nil, &l)
	if err != nil || printed {
		return err
	}
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tEXPIRES\tJOINED\tMETADATA")
	for _, mb := range l.Members {
		exp := when(mb.ExpiresAt)
		if mb.Socket {
			exp = "(connected)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mb.Member, exp, when(mb.JoinedAt), clip(string(mb.Metadata), 60))
	}
	return tw.Flush()
}

// Queue.

func queueEnqueue(ctx context.Context, c *coordCmd) error {
	var body []byte
	if len(c.args) == 1 {
		body = []byte(c.args[0])
	} else {
		var err error
		if body, err = io.ReadAll(c.m.Stdin); err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		body = []byte(strings.TrimSpace(string(body)))
	}
	if !json.Valid(body) {
		fmt.Fprintf(c.m.Stderr, "cairn queue enqueue: the body must be JSON (a string is \"quoted\"): %s\n", clip(string(body), 80))
		return exitError(ExitUsage)
	}
	var r coord.EnqueueResult
	printed, err := c.call(ctx, "enqueue", coord.EnqueueArgs{Body: body, DelayMs: ms(c.delay), DedupKey: c.dedupKey}, &r)
	if err == nil && !printed {
		if r.Duplicate {
			c.printf("duplicate of message %d (dedup key %s): nothing enqueued\n", r.ID, c.dedupKey)
		} else {
			c.printf("enqueued message %d in %s\n", r.ID, c.name)
		}
	}
	return err
}

func queueClaim(ctx context.Context, c *coordCmd) error {
	var r coord.ClaimResult
	printed, err := c.call(ctx, "claim", coord.ClaimArgs{Max: c.max, VisibilityMs: ms(c.visibility), RequestID: c.requestID}, &r)
	if err != nil || printed {
		return err
	}
	if len(r.Messages) == 0 {
		fmt.Fprintln(c.m.Stderr, "no messages to claim")
		return nil
	}
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tATTEMPT\tRECEIPT\tVISIBLE UNTIL\tBODY")
	for _, msg := range r.Messages {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", msg.ID, msg.Attempt, msg.Receipt, when(msg.VisibleUntil), clip(string(msg.Body), 60))
	}
	return tw.Flush()
}

func queueAck(ctx context.Context, c *coordCmd) error {
	var r coord.AckResult
	printed, err := c.call(ctx, "ack", coord.AckArgs{ID: c.id, Receipt: c.receipt}, &r)
	if err == nil && !printed {
		c.printf("acked message %d\n", c.id)
	}
	return err
}

func queueNack(ctx context.Context, c *coordCmd) error {
	args := coord.NackArgs{ID: c.id, Receipt: c.receipt, Reason: c.reason}
	if c.set["delay"] {
		d := ms(c.delay)
		args.DelayMs = &d
	}
	var r coord.AckResult
	printed, err := c.call(ctx, "nack", args, &r)
	if err == nil && !printed {
		c.printf("nacked message %d\n", c.id)
	}
	return err
}

func queueConfig(ctx context.Context, c *coordCmd) error {
	var r coord.QueueConfig
	printed, err := c.call(ctx, "config", coord.QueueConfig{MaxAttempts: c.maxAttempts, BackoffMs: ms(c.backoff), MaxBackoffMs: ms(c.maxBackoff)}, &r)
	if err == nil && !printed {
		printQueueConfig(c, r)
	}
	return err
}

func printQueueConfig(c *coordCmd, q coord.QueueConfig) {
	c.printf("max attempts: %d\nbackoff:      %s\nmax backoff:  %s\n", q.MaxAttempts,
		time.Duration(q.BackoffMs)*time.Millisecond, time.Duration(q.MaxBackoffMs)*time.Millisecond)
}

func queueStats(ctx context.Context, c *coordCmd) error {
	var s coord.QueueStats
	printed, err := c.call(ctx, "", nil, &s)
	if err != nil || printed {
		return err
	}
	c.printf("ready:        %d\ndelayed:      %d\nin flight:    %d\ndepth:        %d\ndead:         %d\n", s.Ready, s.Delayed, s.InFlight, s.Depth, s.Dead)
	printQueueConfig(c, s.Config)
	return nil
}

func queueDead(ctx context.Context, c *coordCmd) error {
	q := url.Values{}
	if c.set["after"] {
		q.Set("after", strconv.FormatInt(c.after, 10))
	}
	if c.set["limit"] {
		q.Set("limit", strconv.Itoa(c.limit))
	}
	op := "dead"
	if len(q) > 0 {
		op += "?" + q.Encode()
	}
	var r coord.DeadResult
	printed, err := c.call(ctx, op, nil, &r)
	if err != nil || printed {
		return err
	}
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tATTEMPTS\tDIED\tREASON\tBODY")
	for _, d := range r.Messages {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", d.ID, d.Attempts, when(d.DiedAt), clip(d.Reason, 40), clip(string(d.Body), 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := len(r.Messages); n > 0 && (n == c.limit || !c.set["limit"] && n == 100) {
		fmt.Fprintf(c.m.Stderr, "more: --after %d\n", r.Messages[n-1].ID)
	}
	return nil
}

// clip shortens s to n characters for a table cell, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// shellQuote quotes s for a command line to copy, if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
