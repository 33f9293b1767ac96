package mcptools

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// output converts a tool result to the JSON output the model sees (see
// the package documentation), and returns the text of its text parts.
func output(res *mcp.CallToolResult) (json.RawMessage, string) {
	var texts []string
	allText := true
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			texts = append(texts, t.Text)
		} else {
			allText = false
		}
	}
	text := strings.Join(texts, "\n")
	if res.StructuredContent != nil {
		if b, err := json.Marshal(res.StructuredContent); err == nil && string(b) != "null" {
			return b, text
		}
	}
	if allText {
		b, _ := json.Marshal(text)
		return b, text
	}
	parts := make([]map[string]any, 0, len(res.Content))
	for _, c := range res.Content {
		switch c := c.(type) {
		case *mcp.TextContent:
			parts = append(parts, map[string]any{"type": "text", "text": c.Text})
		case *mcp.ImageContent:
			parts = append(parts, map[string]any{"type": "image", "mimeType": c.MIMEType, "bytes": len(c.Data)})
		case *mcp.AudioContent:
			parts = append(parts, map[string]any{"type": "audio", "mimeType": c.MIMEType, "bytes": len(c.Data)})
		case *mcp.ResourceLink:
			p := map[string]any{"type": "resource_link", "uri": c.URI, "name": c.Name}
			if c.MIMEType != "" {
				p["mimeType"] = c.MIMEType
			}
			if c.Description != "" {
				p["description"] = c.Description
			}
			parts = append(parts, p)
		case *mcp.EmbeddedResource:
			p := map[string]any{"type": "resource"}
			if r := c.Resource; r != nil {
				p["uri"] = r.URI
				if r.MIMEType != "" {
					p["mimeType"] = r.MIMEType
				}
				if r.Blob != nil {
					p["bytes"] = len(r.Blob)
				} else {
					p["text"] = r.Text
				}
			}
			parts = append(parts, p)
		default:
			b, err := json.Marshal(c)
			if err == nil {
				parts = append(parts, map[string]any{"type": "other", "content": json.RawMessage(b)})
			}
		}
	}
	b, _ := json.Marshal(parts)
	return b, text
}

// tail is a subprocess's standard error: each line is logged at debug
// level, and the last ones are kept for error messages.
type tail struct {
	log    *slog.Logger
	server string

	mu      sync.Mutex
	partial []byte   // the line being written
	lines   []string // the last complete lines
}

// tailLines and tailLine bound what a tail keeps.
const (
	tailLines = 3
	tailLine  = 512
)

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(t.partial) < tailLine {
				t.partial = append(t.partial, p[:min(len(p), tailLine-len(t.partial))]...)
			}
			break
		}
		if len(t.partial) < tailLine {
			t.partial = append(t.partial, p[:min(i, tailLine-len(t.partial))]...)
		}
		p = p[i+1:]
		line := strings.TrimSpace(string(t.partial))
		t.partial = t.partial[:0]
		if line == "" {
			continue
		}
		t.log.Debug("mcp server stderr", "server", t.server, "line", line)
		t.lines = append(t.lines, line)
		if len(t.lines) > tailLines {
			t.lines = t.lines[len(t.lines)-tailLines:]
		}
	}
	return n, nil
}

// last returns the last lines, joined by " | ", with the partial one.
func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if p := strings.TrimSpace(string(t.partial)); p != "" {
		lines = append(lines[:len(lines):len(lines)], p)
	}
	return strings.Join(lines, " | ")
}
