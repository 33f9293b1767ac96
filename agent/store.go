package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cairn-dev/cairn"
)

// Storage. Each message is one row of `messages`, ordered by seq (the
// order the model saw them in). Its parts are a JSON array in the row when
// the array is at most chunkBytes long; a longer array is split into
// chunkBytes pieces in `message_chunks`, so that a message of any size fits
// under SQLite's per-value limit (the runtime's MaxValueBytes) and a page
// of history never reads one ever-growing value.

// chunkBytes is the most parts JSON kept in one row.
const chunkBytes = 512 << 10

// migrations are the agent class's schema. Append only.
var migrations = []cairn.Migration{{SQL: `
CREATE TABLE messages (
	seq           INTEGER PRIMARY KEY,
	id            TEXT NOT NULL UNIQUE,
	role          TEXT NOT NULL,
	status        TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	input_tokens  INTEGER,
	output_tokens INTEGER,
	model         TEXT NOT NULL DEFAULT '',
	error         TEXT NOT NULL DEFAULT '',
	parts         BLOB,
	chunks        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE message_chunks (
	message_id TEXT NOT NULL,
	n          INTEGER NOT NULL,
	data       BLOB NOT NULL,
	PRIMARY KEY (message_id, n)
) WITHOUT ROWID;
`}, {SQL: `
ALTER TABLE messages ADD COLUMN rounds INTEGER NOT NULL DEFAULT 0;
`}, sessionScheduler.Migration(), {SQL: approvalsTable}, {SQL: revSQL}, {SQL: archiveSQL}}

// revSQL gives messages a rev column: a random stamp the triggers set
// whenever a message changes, by whatever code. A message read before
// with the same rev is the same message, so that the history sent to the
// model (recent) is decoded once per change, not once per generation.
// Random, not a counter: a rolled-back turn must not let a later change
// reuse a stamp.
const revSQL = `
ALTER TABLE messages ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER messages_rev_insert AFTER INSERT ON messages BEGIN
	UPDATE messages SET rev = random() WHERE id = NEW.id;
END;
CREATE TRIGGER messages_rev_update
AFTER UPDATE OF id, role, status, created_at, input_tokens, output_tokens, model, error, parts, chunks, rounds ON messages BEGIN
	UPDATE messages SET rev = random() WHERE id IN (OLD.id, NEW.id);
END;
CREATE TRIGGER message_chunks_rev_insert AFTER INSERT ON message_chunks BEGIN
	UPDATE messages SET rev = random() WHERE id = NEW.message_id;
END;
CREATE TRIGGER message_chunks_rev_update AFTER UPDATE ON message_chunks BEGIN
	UPDATE messages SET rev = random() WHERE id IN (OLD.message_id, NEW.message_id);
END;
CREATE TRIGGER message_chunks_rev_delete AFTER DELETE ON message_chunks BEGIN
	UPDATE messages SET rev = random() WHERE id = OLD.message_id;
END;
`

// store reads and writes one session's messages. It must be used in the
// object's turn.
type store struct {
	st    *cairn.State
	cache *msgCache // decoded messages recent returned last; nil: none
	svc   *Service  // for the archive; nil: hot messages only
}

// msgCache holds decoded messages by ID, with their rev stamps.
type msgCache struct {
	byID map[string]cachedMessage
}

type cachedMessage struct {
	rev int64
	m   Message
}

// insert appends m at the end of the history.
func (s store) insert(m *Message) error { return s.insertAt(m, nil) }

// insertAt inserts m with seq (nil: after every message, see nextSeq).
func (s store) insertAt(m *Message, seq any) error {
	parts, chunks, err := encodeParts(m.Parts)
	if err != nil {
		return err
	}
	var in, out any
	if m.Usage != nil {
		in, out = m.Usage.InputTokens, m.Usage.OutputTokens
	}
	if _, err := s.st.Exec(`INSERT INTO messages (seq, id, role, status, created_at, input_tokens, output_tokens, model, error, parts, chunks, rounds)
		VALUES (COALESCE(?, `+nextSeq+`), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		seq, m.ID, string(m.Role), string(m.Status), m.CreatedAt.UnixMilli(), in, out, m.Model, m.Error, parts, len(chunks), m.Rounds); err != nil {
		return fmt.Errorf("insert message: %w", err)
	}
	return s.putChunks(m.ID, chunks)
}

// update rewrites m's parts, status, usage, error and rounds.
func (s store) update(m *Message) error {
	parts, chunks, err := encodeParts(m.Parts)
	if err != nil {
		return err
	}
	var in, out any
	if m.Usage != nil {
		in, out = m.Usage.InputTokens, m.Usage.OutputTokens
	}
	if _, err := s.st.Exec(`DELETE FROM message_chunks WHERE message_id = ?`, m.ID); err != nil {
		return fmt.Errorf("update message: %w", err)
	}
	if _, err := s.st.Exec(`UPDATE messages SET status = ?, input_tokens = ?, output_tokens = ?, model = ?, error = ?, parts = ?, chunks = ?, rounds = ? WHERE id = ?`,
		string(m.Status), in, out, m.Model, m.Error, parts, len(chunks), m.Rounds, m.ID); err != nil {
		return fmt.Errorf("update message: %w", err)
	}
	return s.putChunks(m.ID, chunks)
}

func (s store) putChunks(id string, chunks [][]byte) error {
	for i, c := range chunks {
		if _, err := s.st.Exec(`INSERT INTO message_chunks (message_id, n, data) VALUES (?, ?, ?)`, id, i, c); err != nil {
			return fmt.Errorf("insert message chunk: %w", err)
		}
	}
	return nil
}

// activate makes the user message id complete and gives it the last place
// in the history, if it is not there already: a message that waited for
// other generations is seen by the model (and in the history) after their
// replies.
func (s store) activate(id string) error {
	_, err := s.st.Exec(`UPDATE messages SET status = ?,
		seq = CASE WHEN seq < (SELECT MAX(seq) FROM messages) THEN (SELECT MAX(seq) + 1 FROM messages) ELSE seq END
		WHERE id = ?`, string(Complete), id)
	if err != nil {
		return fmt.Errorf("activate message: %w", err)
	}
	return nil
}

// setStatus sets the status and error of message id.
func (s store) setStatus(id string, st Status, errText string) error {
	if _, err := s.st.Exec(`UPDATE messages SET status = ?, error = ? WHERE id = ?`, string(st), errText, id); err != nil {
		return fmt.Errorf("update message: %w", err)
	}
	return nil
}

// interrupt settles the messages an earlier instance left in flight (the
// process stopped): a streaming reply failed, a pending message was never
// sent.
func (s store) interrupt() error {
	if _, err := s.st.Exec(`UPDATE messages SET status = ?, error = ? WHERE status = ?`,
		string(Failed), "interrupted: the server stopped during the generation", string(Streaming)); err != nil {
		return err
	}
	_, err := s.st.Exec(`UPDATE messages SET status = ?, error = ? WHERE status = ?`,
		string(Cancelled), "the server stopped before the message was sent to the model", string(Pending))
	return err
}

// encodeParts returns the parts JSON for the row, or nil and the chunks.
func encodeParts(parts []Part) ([]byte, [][]byte, error) {
	if parts == nil {
		parts = []Part{}
	}
	b, err := json.Marshal(parts)
	if err != nil {
		return nil, nil, fmt.Errorf("encode parts: %w", err)
	}
	if len(b) <= chunkBytes {
		return b, nil, nil
	}
	var chunks [][]byte
	for len(b) > 0 {
		n := min(len(b), chunkBytes)
		chunks = append(chunks, b[:n])
		b = b[n:]
	}
	return nil, chunks, nil
}

const messageColumns = `id, role, status, created_at, input_tokens, output_tokens, model, error, parts, chunks, rounds`

// recent returns the last n complete messages, oldest first: the context
// sent to the model. Messages unchanged since the last call (same rev)
// come from the cache, decoded then: their parts are shared, read only.
func (s store) recent(n int) ([]Message, error) {
	rows, err := s.st.Query(`SELECT id, rev FROM messages WHERE status = ? ORDER BY seq DESC LIMIT ?`, string(Complete), n)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	k := len(rows.Values)
	msgs := make([]Message, k)
	revs := make([]int64, k)
	var missing []int // indexes into msgs
	for i, v := range rows.Values {
		j := k - 1 - i
		id, rev := str(v[0]), i64(v[1])
		revs[j] = rev
		if m, ok := s.cache.get(id, rev); ok {
			msgs[j] = m
		} else {
			missing = append(missing, j)
		}
	}
	if len(missing) > 8 {
		// Mostly new (a cold cache): one query for them all.
		full, err := s.st.Query(`SELECT `+messageColumns+`, rev FROM messages WHERE status = ? ORDER BY seq DESC LIMIT ?`, string(Complete), n)
		if err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		decoded, err := s.decode(full)
		if err != nil {
			return nil, err
		}
		if len(decoded) != k {
			return nil, fmt.Errorf("read history: %d messages, then %d", k, len(decoded))
		}
		for i, m := range decoded {
			v := full.Values[i]
			msgs[k-1-i], revs[k-1-i] = m, i64(v[len(v)-1])
		}
	} else {
		for _, j := range missing {
			id := str(rows.Values[k-1-j][0])
			m, ok, err := s.get(id)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("read history: message %s vanished", id)
			}
			msgs[j] = m
		}
	}
	s.cache.keep(msgs, revs)
	return msgs, nil
}

// get returns the cached message id if its stamp is rev.
func (c *msgCache) get(id string, rev int64) (Message, bool) {
	if c == nil {
		return Message{}, false
	}
	e, ok := c.byID[id]
	if !ok || e.rev != rev {
		return Message{}, false
	}
	return e.m, true
}

// keep makes msgs, stamped revs, the cache's content.
func (c *msgCache) keep(msgs []Message, revs []int64) {
	if c == nil {
		return
	}
	c.byID = make(map[string]cachedMessage, len(msgs))
	for i, m := range msgs {
		c.byID[m.ID] = cachedMessage{rev: revs[i], m: m}
	}
}

// get returns the message with ID id.
func (s store) get(id string) (Message, bool, error) {
	rows, err := s.st.Query(`SELECT `+messageColumns+` FROM messages WHERE id = ?`, id)
	if err != nil {
		return Message{}, false, fmt.Errorf("read message: %w", err)
	}
	msgs, err := s.decode(rows)
	if err != nil || len(msgs) == 0 {
		return Message{}, false, err
	}
	return msgs[0], true, nil
}

// userOf returns the ID of the user message an assistant message
// answers: the one just before it (a reply is inserted right after its
// question is moved to the end), or "" if there is none.
func (s store) userOf(id string) (string, error) {
	rows, err := s.st.Query(`SELECT id FROM messages WHERE role = ? AND seq = (SELECT seq - 1 FROM messages WHERE id = ?)`, string(User), id)
	if err != nil {
		return "", fmt.Errorf("find user message: %w", err)
	}
	if len(rows.Values) == 0 {
		return "", nil
	}
	return str(rows.Values[0][0]), nil
}

func (s store) seq(id string) (int64, bool, error) {
	rows, err := s.st.Query(`SELECT seq FROM messages WHERE id = ?`, id)
	if err != nil {
		return 0, false, fmt.Errorf("find message: %w", err)
	}
	if len(rows.Values) == 0 {
		return 0, false, nil
	}
	seq, _ := rows.Values[0][0].(int64)
	return seq, true, nil
}

// decode turns rows of messageColumns into messages, reading the chunks
// of chunked ones.
func (s store) decode(rows *cairn.Rows) ([]Message, error) {
	msgs := make([]Message, 0, len(rows.Values))
	for _, v := range rows.Values {
		m := Message{
			ID:        str(v[0]),
			Role:      Role(str(v[1])),
			Status:    Status(str(v[2])),
			CreatedAt: time.UnixMilli(i64(v[3])).UTC(),
			Model:     str(v[6]),
			Error:     str(v[7]),
			Rounds:    int(i64(v[10])),
		}
		if v[4] != nil || v[5] != nil {
			m.Usage = &Usage{InputTokens: i64(v[4]), OutputTokens: i64(v[5])}
		}
		raw := blob(v[8])
		if n := i64(v[9]); n > 0 {
			crows, err := s.st.Query(`SELECT data FROM message_chunks WHERE message_id = ? ORDER BY n`, m.ID)
			if err != nil {
				return nil, fmt.Errorf("read message chunks: %w", err)
			}
			if int64(len(crows.Values)) != n {
				return nil, fmt.Errorf("message %s: %d chunks stored, %d expected", m.ID, len(crows.Values), n)
			}
			var buf bytes.Buffer
			for _, c := range crows.Values {
				buf.Write(blob(c[0]))
			}
			raw = buf.Bytes()
		}
		if err := json.Unmarshal(raw, &m.Parts); err != nil {
			return nil, fmt.Errorf("message %s: decode parts: %w", m.ID, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return ""
}

func blob(v any) []byte {
	switch x := v.(type) {
	case []byte:
		return x
	case string:
		return []byte(x)
	}
	return nil
}

func i64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case float64:
		return int64(x)
	}
	return 0
}
