package schedule

import (
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/cairn-dev/cairn"
)

// maxCronBytes bounds a cron expression; real ones are a few dozen bytes.
const maxCronBytes = 256

// cronParser reads five fields, six with seconds first, or a descriptor.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseCron parses expr for time zone tz ("" is UTC). The zone is a
// separate argument, so the parser's own TZ= prefix is refused: one way to
// say it, and the prefix's parsing panics on some inputs.
func parseCron(expr, tz string) (sched cron.Schedule, err error) {
	if len(expr) > maxCronBytes {
		return nil, cairn.Errorf(cairn.TooLarge, "cron expression of %d bytes; the limit is %d", len(expr), maxCronBytes)
	}
	expr = strings.TrimSpace(expr)
	if expr == "" {
		return nil, cairn.Errorf(cairn.Invalid, "cron expression is empty")
	}
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return nil, cairn.Errorf(cairn.Invalid, "cron expression %q: give the time zone separately, not as a prefix", expr)
	}
	loc := time.UTC
	if tz != "" {
		if len(tz) > 64 || strings.ContainsAny(tz, "\x00") {
			return nil, cairn.Errorf(cairn.Invalid, "unknown time zone %q", tz)
		}
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, cairn.Errorf(cairn.Invalid, "unknown time zone %q", tz)
		}
		loc = l
	}
	defer func() {
		// The parser is third-party code fed untrusted input: a panic in
		// it is a bad expression, not a crash of the object.
		if p := recover(); p != nil {
			sched, err = nil, cairn.Errorf(cairn.Invalid, "cron expression %q: %v", expr, p)
		}
	}()
	if rest, ok := strings.CutPrefix(expr, "@every "); ok {
		// The parser rounds a short or negative interval up to 1s;
		// refuse it instead.
		if d, err := time.ParseDuration(strings.TrimSpace(rest)); err == nil && d < time.Second {
			return nil, cairn.Errorf(cairn.Invalid, "cron expression %q: @every needs at least 1s", expr)
		}
	}
	s, err := cronParser.Parse(expr)
	if err != nil {
		return nil, cairn.Errorf(cairn.Invalid, "cron expression %q: %v", expr, err)
	}
	switch s := s.(type) {
	case *cron.SpecSchedule:
		s.Location = loc
	case cron.ConstantDelaySchedule:
	default:
		return nil, cairn.Errorf(cairn.Invalid, "cron expression %q: unsupported kind %T", expr, s)
	}
	return s, nil
}
