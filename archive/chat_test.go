package archive_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file generates realistic chat JSONL for the codec measurements and
// the store benchmarks: messages in the JSON shape of agent.Message (the
// agent package is not imported, so that this package's tests do not
// depend on it), with English prose of varied lengths, Markdown, code,
// tool calls with JSON arguments, tool results, ids, timestamps and
// usage. The text comes from the Go distribution: Newton's Opticks
// (general English) from $GOROOT/src/testdata, doc comments (technical
// English) and code from the standard library's sources.

type chatPart struct {
	Type       string          `json:"type"`
	Text       string          `json:"text,omitempty"`
	ToolCallID string          `json:"toolCallId,omitempty"`
	ToolName   string          `json:"toolName,omitempty"`
	Input      json.RawMessage `json:"input,omitempty"`
	Output     json.RawMessage `json:"output,omitempty"`
	IsError    bool            `json:"isError,omitempty"`
}

type chatUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

type chatMessage struct {
	ID        string     `json:"id"`
	Role      string     `json:"role"`
	Parts     []chatPart `json:"parts"`
	CreatedAt time.Time  `json:"created_at"`
	Status    string     `json:"status"`
	Usage     *chatUsage `json:"usage,omitempty"`
	Model     string     `json:"model,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// corpus is the text the generator draws from.
type corpus struct {
	prose []string   // sentences of general English
	tech  []string   // sentences of technical English
	code  [][]string // blocks of Go source lines
	name  string     // what the corpus was made of
}

var loadCorpus = sync.OnceValue(func() *corpus {
	c := &corpus{}
	root := ""
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		root = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile(filepath.Join(root, "src", "testdata", "Isaac.Newton-Opticks.txt")); err == nil {
		c.prose = sentences(string(b))
	}
	for _, pkg := range []string{"net/http", "strings", "bytes", "context", "encoding/json", "os", "io", "sync", "time", "fmt", "sort", "bufio", "database/sql", "net/url", "log/slog"} {
		files, _ := filepath.Glob(filepath.Join(root, "src", pkg, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			doc, code := splitGo(string(b))
			c.tech = append(c.tech, sentences(doc)...)
			c.code = append(c.code, code...)
		}
	}
	c.name = fmt.Sprintf("GOROOT text: %d prose sentences, %d technical sentences, %d code blocks", len(c.prose), len(c.tech), len(c.code))
	if len(c.prose) < 100 || len(c.tech) < 100 || len(c.code) < 20 {
		// No Go sources: a poorer synthetic stand-in, still words.
		c = syntheticCorpus()
	}
	return c
})

// sentences splits text into sentences of 20 to 400 bytes, whitespace
// collapsed.
func sentences(text string) []string {
	text = strings.Join(strings.Fields(text), " ")
	var out []string
	for len(text) > 0 {
		i := strings.Index(text, ". ")
		if i < 0 {
			i = len(text) - 1
		}
		s := strings.TrimSpace(text[:i+1])
		text = text[i+1:]
		if len(s) >= 20 && len(s) <= 400 {
			out = append(out, s)
		}
	}
	return out
}

// splitGo returns the comment text of a Go file and its function bodies
// as blocks of 4 to 30 lines.
func splitGo(src string) (doc string, code [][]string) {
	var comments strings.Builder
	var block []string
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "//") {
			if !strings.HasPrefix(t, "//go:") {
				comments.WriteString(strings.TrimPrefix(t, "//"))
				comments.WriteByte(' ')
			}
			continue
		}
		if strings.HasPrefix(line, "func ") {
			block = []string{line}
			continue
		}
		if block != nil {
			block = append(block, line)
			if line == "}" || len(block) == 30 {
				if len(block) >= 4 {
					code = append(code, block)
				}
				block = nil
			}
		}
	}
	return comments.String(), code
}

func syntheticCorpus() *corpus {
	words := strings.Fields(`the a of to and in is that for it with as on be this by are or
		from at an not which but can have has was were will would should could may
		request response server client handler context value error file buffer
		string bytes read write close open timeout deadline connection message
		session agent model tool call result query database table row column index
		function method interface type struct field return package import module`)
	r := rand.New(rand.NewPCG(1, 2))
	sentence := func() string {
		n := 6 + r.IntN(20)
		w := make([]string, n)
		for i := range w {
			w[i] = words[r.IntN(len(words))]
		}
		return strings.ToUpper(w[0][:1]) + strings.Join(w, " ")[1:] + "."
	}
	c := &corpus{name: "synthetic words (no GOROOT sources)"}
	for range 2000 {
		c.prose = append(c.prose, sentence())
		c.tech = append(c.tech, sentence())
	}
	for range 100 {
		var b []string
		for range 4 + r.IntN(20) {
			b = append(b, "\t"+sentence())
		}
		c.code = append(c.code, b)
	}
	return c
}

// chat generates the messages of one conversation from a seeded source.
//
// A conversation stays on a topic: it draws sentences and code from a
// window of the corpus (in source order, so from a few neighbouring
// files) that drifts as it goes, and an answer sometimes quotes the
// question's code or words. With uniform set it draws from the whole
// corpus instead, which gives a lower bound on the compression ratio.
type chat struct {
	c       *corpus
	r       *rand.Rand
	now     time.Time
	uniform bool
	base    float64 // where the window starts, as a fraction of each list
	user    string  // text of the last user message
}

func newChat(seed uint64) *chat {
	r := rand.New(rand.NewPCG(seed, seed*31+7))
	return &chat{
		c:    loadCorpus(),
		r:    r,
		now:  time.Date(2026, 11, 3, 9, 14, 0, 0, time.UTC),
		base: r.Float64(),
	}
}

// window is how many neighbouring sentences or code blocks a
// conversation draws from at a time.
const window = 400

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func (g *chat) hex(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = "0123456789abcdef"[g.r.IntN(16)]
	}
	return string(b)
}

func (g *chat) alnum(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alnum[g.r.IntN(len(alnum))]
	}
	return string(b)
}

func (g *chat) pick(s []string) string { return s[g.r.IntN(len(s))] }

// index picks an index of a corpus list of n items: near the topic, or
// anywhere when uniform.
func (g *chat) index(n int) int {
	if g.uniform || n <= window {
		return g.r.IntN(n)
	}
	return (int(g.base*float64(n)) + g.r.IntN(window)) % n
}

func (g *chat) sentence(s []string) string { return s[g.index(len(s))] }

// sentences returns n sentences, mostly technical.
func (g *chat) sentences(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		if g.r.IntN(10) < 3 {
			b.WriteString(g.sentence(g.c.prose))
		} else {
			b.WriteString(g.sentence(g.c.tech))
		}
	}
	return b.String()
}

func (g *chat) codeBlock() string {
	block := g.c.code[g.index(len(g.c.code))]
	return "```go\n" + strings.Join(block, "\n") + "\n```"
}

// answer is an assistant's Markdown answer: paragraphs, lists, code.
func (g *chat) answer() string {
	var parts []string
	if !g.uniform && g.user != "" && g.r.IntN(4) == 0 {
		// Quote the question, or the code in it.
		q := g.user
		if i := strings.Index(q, "```"); i >= 0 {
			q = q[i:]
		} else {
			q = "> " + q
		}
		parts = append(parts, q)
	}
	for range 1 + g.r.IntN(5) {
		switch g.r.IntN(6) {
		case 0:
			var items []string
			for range 2 + g.r.IntN(4) {
				items = append(items, "- "+g.sentences(1))
			}
			parts = append(parts, strings.Join(items, "\n"))
		case 1:
			parts = append(parts, g.codeBlock())
		default:
			parts = append(parts, g.sentences(1+g.r.IntN(5)))
		}
	}
	return strings.Join(parts, "\n\n")
}

func (g *chat) mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// toolCall returns a tool call and its result.
func (g *chat) toolCall() (call, result chatPart) {
	id := "call_" + g.alnum(24)
	var name string
	var in, out any
	switch g.r.IntN(4) {
	case 0:
		name = "web_search"
		in = map[string]any{"query": strings.TrimSuffix(g.sentence(g.c.tech), "."), "max_results": 3 + g.r.IntN(5)}
		var results []map[string]string
		for range 3 + g.r.IntN(4) {
			results = append(results, map[string]string{
				"title":   g.sentences(1),
				"url":     fmt.Sprintf("https://%s.example.com/docs/%s", g.pick([]string{"go", "pkg", "blog", "dev", "learn"}), g.hex(8)),
				"snippet": g.sentences(2),
			})
		}
		out = map[string]any{"results": results}
	case 1:
		name = "read_file"
		path := fmt.Sprintf("internal/%s/%s.go", g.pick([]string{"server", "store", "agent", "http", "auth"}), g.pick([]string{"handler", "session", "cache", "types", "client"}))
		in = map[string]any{"path": path}
		out = map[string]any{"path": path, "content": strings.Join(g.c.code[g.index(len(g.c.code))], "\n"), "bytes": 800 + g.r.IntN(4000)}
	case 2:
		name = "run_sql"
		in = map[string]any{"sql": fmt.Sprintf("SELECT id, name, created_at, total FROM orders WHERE customer_id = %d ORDER BY created_at DESC LIMIT 20", g.r.IntN(100000))}
		var rows [][]any
		for range 2 + g.r.IntN(15) {
			rows = append(rows, []any{g.r.IntN(1000000), g.pick([]string{"Widget", "Gadget", "Sprocket", "Flange", "Gizmo"}) + " " + g.alnum(4),
				g.now.Add(-time.Duration(g.r.IntN(1e6)) * time.Second).Format(time.RFC3339), float64(g.r.IntN(100000)) / 100})
		}
		out = map[string]any{"columns": []string{"id", "name", "created_at", "total"}, "rows": rows}
	default:
		name = "get_weather"
		city := g.pick([]string{"Lisbon", "Osaka", "Denver", "Nairobi", "Oslo", "Recife"})
		in = map[string]any{"city": city, "units": "metric"}
		out = map[string]any{"city": city, "temperature_c": float64(g.r.IntN(400))/10 - 5, "humidity": g.r.IntN(100),
			"conditions": g.pick([]string{"clear", "light rain", "overcast", "snow showers"}), "observed_at": g.now.Format(time.RFC3339)}
	}
	call = chatPart{Type: "tool-call", ToolCallID: id, ToolName: name, Input: g.mustJSON(in)}
	result = chatPart{Type: "tool-result", ToolCallID: id, ToolName: name, Output: g.mustJSON(out)}
	if g.r.IntN(20) == 0 {
		result.Output = g.mustJSON(map[string]string{"error": g.sentences(1)})
		result.IsError = true
	}
	return call, result
}

func (g *chat) message(role string) chatMessage {
	g.now = g.now.Add(time.Duration(2+g.r.IntN(120))*time.Second + time.Duration(g.r.IntN(1e9)))
	m := chatMessage{ID: "msg_" + g.hex(20), Role: role, CreatedAt: g.now, Status: "complete"}
	switch role {
	case "user":
		text := g.sentences(1 + g.r.IntN(3))
		if g.r.IntN(8) == 0 {
			text += "\n\n" + g.codeBlock()
		}
		m.Parts = []chatPart{{Type: "text", Text: text}}
		g.user = text
		// The topic drifts a little with each question.
		g.base += g.r.Float64() * 0.002
		if g.base >= 1 {
			g.base--
		}
	case "system":
		m.Parts = []chatPart{{Type: "text", Text: "You are a helpful assistant for a software team. " + g.sentences(3)}}
	case "assistant":
		m.Model = g.pick([]string{"gpt-4o-mini", "claude-sonnet-4-5", "gpt-4.1"})
		rounds := 0
		if g.r.IntN(3) == 0 {
			rounds = 1 + g.r.IntN(3)
		}
		for range rounds {
			if g.r.IntN(3) == 0 {
				m.Parts = append(m.Parts, chatPart{Type: "reasoning", Text: g.sentences(1 + g.r.IntN(4))})
			}
			if g.r.IntN(2) == 0 {
				m.Parts = append(m.Parts, chatPart{Type: "text", Text: g.sentences(1)})
			}
			var results []chatPart
			for range 1 + g.r.IntN(2) {
				call, result := g.toolCall()
				m.Parts = append(m.Parts, call)
				results = append(results, result)
			}
			m.Parts = append(m.Parts, results...)
		}
		m.Parts = append(m.Parts, chatPart{Type: "text", Text: g.answer()})
		m.Usage = &chatUsage{InputTokens: int64(500 + g.r.IntN(20000)), OutputTokens: int64(20 + g.r.IntN(1500))}
	}
	return m
}

// jsonl returns whole messages of a conversation, one JSON object per
// line, until at least n bytes.
func (g *chat) jsonl(n int) []byte {
	var buf bytes.Buffer
	if g.r.IntN(10) == 0 {
		json.NewEncoder(&buf).Encode(g.message("system"))
	}
	for buf.Len() < n {
		buf.Write(g.exchange())
	}
	return buf.Bytes()
}

// exchange returns a question and its answer, as two lines of JSONL.
func (g *chat) exchange() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.Encode(g.message("user"))
	enc.Encode(g.message("assistant"))
	return buf.Bytes()
}

// TestChatJSONL checks that the generated chat decodes as messages.
func TestChatJSONL(t *testing.T) {
	raw := newChat(1).jsonl(256 << 10)
	t.Logf("corpus: %s", loadCorpus().name)
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var m chatMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m.ID == "" || len(m.Parts) == 0 {
			t.Fatalf("line %d: %v: %.200s", n, err, sc.Bytes())
		}
		n++
	}
	t.Logf("%d messages, %d bytes, %d bytes per message", n, len(raw), len(raw)/n)
}
