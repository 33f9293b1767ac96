//go:build race

package agent

// raceEnabled: the race detector slows the pure-Go SQLite some 20-fold, so
// the largest tests scale down under it.
const raceEnabled = true
