package schedule_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/cairn-dev/cairn"
	"github.com/cairn-dev/cairn/schedule"
	"github.com/cairn-dev/cairn/sqlite"
)

// Reminder is a class whose alarm runs its schedules.
type Reminder struct {
	st    *cairn.State
	sched *schedule.Scheduler
	out   chan<- string
}

// Alarm runs the due schedules.
func (r *Reminder) Alarm(ctx context.Context, a cairn.AlarmInfo) error {
	_, err := r.sched.Fire(r.st, func(s schedule.Schedule) error {
		var text string
		if err := json.Unmarshal(s.Payload, &text); err != nil {
			return err
		}
		r.out <- s.Callback + ": " + text
		return nil
	})
	return err
}

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "cairn-schedule-example")
	defer os.RemoveAll(dir)
	eng, err := sqlite.Open(dir, cairn.Disk)
	if err != nil {
		log.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	sched := schedule.New()
	out := make(chan string, 1)
	ns, err := rt.Register("reminder", cairn.Class{
		New: func(st *cairn.State) (any, error) {
			return &Reminder{st: st, sched: sched, out: out}, nil
		},
		Migrations: []cairn.Migration{sched.Migration()},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := rt.Open(); err != nil {
		log.Fatal(err)
	}
	defer rt.Close(ctx)

	stub, _ := ns.GetByName("alice")
	err = stub.Run(ctx, func(ctx context.Context, st *cairn.State) error {
		_, err := sched.Add(st, schedule.Spec{
			When:     schedule.After(100 * time.Millisecond),
			Callback: "remind",
			Payload:  json.RawMessage(`"stand up"`),
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// Nobody calls the object again: its alarm runs the schedule.
	fmt.Println(<-out)
	// Output: remind: stand up
}
