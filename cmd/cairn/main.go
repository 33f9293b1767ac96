// Command cairn runs the cairn server and talks to it.
//
//	cairn serve            run the server (see cairn serve --help)
//	cairn kv ...           read and write keys of an object
//	cairn call ...         call an RPC method of an object
//	cairn sql ...          run SQL on an object
//	cairn objects ...      list, inspect and delete objects
//	cairn alarm ...        get, set and delete an object's alarm
//	cairn lock ...         acquire, renew, release and inspect a lock
//	cairn locks ...        the same, on the lock table
//	cairn leader ...       campaign, renew, resign and get a group's leader
//	cairn presence ...     heartbeat, leave and list a room's members
//	cairn queue ...        enqueue, claim, ack, nack; stats and dead letters
//	cairn usage            usage per namespace
//	cairn agents ...       export, archive, delete an agent session; storage usage
//	cairn bench ...        measure cairn (and the workerd peer) under load
//	cairn version          print the version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain(os.Stdin, os.Stdout, os.Stderr)
	os.Exit(m.Run(ctx, os.Args[1:]))
}

// Version is the version printed by `cairn version`, set at build time with
// -ldflags "-X main.Version=...".
var Version = "dev"

// Main is the program, with its streams, so tests run it in-process.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// NewMain returns a Main on the given streams and the process environment.
func NewMain(stdin io.Reader, stdout, stderr io.Writer) *Main {
	return &Main{Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv}
}

// Exit codes scripts can rely on.
const (
	ExitOK        = 0
	ExitFailure   = 1 // the server failed or could not be reached
	ExitUsage     = 2 // bad command line
	ExitNotFound  = 3 // the thing asked for does not exist
	ExitAuth      = 4 // missing, wrong or insufficient token
	ExitRejected  = 5 // the server rejected the request as invalid or too large
	ExitConflict  = 6
	ExitUnavailbl = 7 // the server is draining or overloaded; retry
)

const usage = `cairn: durable objects for AI agents

Usage:
  cairn serve [flags]                      run the server
  cairn kv get|put|delete|list NS NAME ... read and write keys of an object
  cairn call NS NAME METHOD [JSON]         call an RPC method
  cairn sql NS NAME "SQL" [ARGS...]        run SQL on an object
  cairn objects list|inspect|delete ...    the object catalog
  cairn alarm get|set|delete NS NAME [T]   an object's alarm
  cairn lock VERB RESOURCE [flags]         a lock with a fencing token
  cairn locks VERB NAME [flags]            the same, on the lock table (many locks)
  cairn leader VERB GROUP [flags]          leader election
  cairn presence VERB ROOM [flags]         who is in a room
  cairn queue VERB NAME [flags]            a work queue
  cairn usage                              usage per namespace
  cairn agents export|usage|archive|delete AGENT [SESSION]
                                           an agent session's history and storage
  cairn bench [flags]                      load test (cairn vs workerd)
  cairn version                            print the version

Run 'cairn COMMAND --help' for a command's flags. Client commands reach the
server at --url (env CAIRN_URL, default http://127.0.0.1:8420) with the token
--token (env CAIRN_TOKEN).
`

// Run runs the command line args and returns the exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return m.runServe(ctx, rest)
	case "kv", "call", "sql", "objects", "alarm", "usage":
		return m.runClient(ctx, cmd, rest)
	case "agents":
		return m.runAgents(ctx, rest)
	case "lock", "locks", "leader", "presence", "queue":
		return m.runCoord(ctx, cmd, rest)
	case "bench":
		return m.runBench(ctx, rest)
	case "version", "--version":
		fmt.Fprintln(m.Stdout, "cairn", Version)
		return ExitOK
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(m.Stderr, "cairn: unknown command %q\n\n%s", cmd, usage)
	return ExitUsage
}
