// Package procgroup makes a subprocess the leader of a process group, so
// that the children it starts (npx starts node, miniflare starts workerd)
// can be signalled with it. Elsewhere than Unix there are no groups: the
// subprocess alone is killed.
package procgroup
