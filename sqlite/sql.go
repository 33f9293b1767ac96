package sqlite

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/cairn-dev/cairn"
	zs "zombiezen.com/go/sqlite"
)

// authorizer keeps user SQL away from the reserved tables and from
// transaction control. It is active only while user SQL is prepared (and
// re-prepared, which happens inside Step): internal statements are
// prepared with it off.
type authorizer struct {
	user   bool
	writes bool   // the statement being prepared writes (data or schema)
	dml    bool   // it inserts, updates or deletes rows of user tables
	denied string // why the last denial happened
}

// pragmas user SQL may run: introspection only.
var userPragmas = map[string]bool{
	"table_info": true, "table_xinfo": true, "table_list": true, "index_list": true,
	"index_info": true, "index_xinfo": true, "foreign_key_list": true, "foreign_key_check": true,
	"integrity_check": true, "quick_check": true, "collation_list": true, "function_list": true,
	"foreign_keys": true, "defer_foreign_keys": true,
}

func reserved(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "_cairn_")
}

func (a *authorizer) deny(format string, args ...any) zs.AuthResult {
	a.denied = fmt.Sprintf(format, args...)
	return zs.AuthResultDeny
}

// Authorize implements zs.Authorizer.
func (a *authorizer) Authorize(act zs.Action) zs.AuthResult {
	if !a.user {
		return zs.AuthResultOK
	}
	switch act.Type() {
	case zs.OpTransaction, zs.OpSavepoint:
		return a.deny("user SQL may not control transactions; the turn is the transaction (use Transaction for a nested one)")
	case zs.OpAttach, zs.OpDetach:
		return a.deny("ATTACH and DETACH are not allowed")
	case zs.OpCreateTempIndex, zs.OpCreateTempTable, zs.OpCreateTempTrigger, zs.OpCreateTempView,
		zs.OpDropTempIndex, zs.OpDropTempTable, zs.OpDropTempTrigger, zs.OpDropTempView:
		return a.deny("temporary schema objects are not allowed")
	case zs.OpPragma:
		if !userPragmas[strings.ToLower(act.Pragma())] {
			return a.deny("PRAGMA %s is not allowed", act.Pragma())
		}
		if p := strings.ToLower(act.Pragma()); (p == "foreign_keys" || p == "defer_foreign_keys") && act.PragmaArg() != "" {
			a.writes = true
		}
		return zs.AuthResultOK
	case zs.OpFunction:
		if strings.EqualFold(act.Operation(), "load_extension") {
			return a.deny("load_extension is not allowed")
		}
		return zs.AuthResultOK
	case zs.OpCreateVTable, zs.OpDropVTable:
		if !strings.EqualFold(act.Module(), "fts5") {
			return a.deny("virtual tables other than fts5 are not allowed")
		}
		a.writes = true
	case zs.OpRead:
		// The raw-page and page-statistics tables would show the reserved
		// tables' contents.
		if t := strings.ToLower(act.Table()); t == "sqlite_dbpage" || t == "dbstat" {
			return a.deny("%s is not available", act.Table())
		}
	case zs.OpSelect, zs.OpRecursive:
	case zs.OpInsert, zs.OpUpdate, zs.OpDelete:
		if strings.EqualFold(act.Table(), "sqlite_dbpage") {
			return a.deny("sqlite_dbpage is not available")
		}
		a.writes = true
		if t := strings.ToLower(act.Table()); !strings.HasPrefix(t, "sqlite_") {
			a.dml = true
		}
	default:
		a.writes = true
	}
	for _, name := range []string{act.Table(), act.Index(), act.Trigger(), act.View()} {
		if name != "" && reserved(name) {
			return a.deny("%q is reserved: names starting with _cairn_ belong to cairn", name)
		}
	}
	if db := act.Database(); db != "" && db != "main" {
		return a.deny("only the main database is available")
	}
	return zs.AuthResultOK
}

// prepareUser prepares one statement of user SQL from query, returning it
// and the rest of query.
func (s *store) prepareUser(query string) (*zs.Stmt, stmtKind, string, error) {
	if st, ok := s.user[query]; ok {
		return st, s.kinds[query], "", nil
	}
	s.auth.user, s.auth.writes, s.auth.dml, s.auth.denied = true, false, false, ""
	stmt, trailing, err := s.conn.PrepareTransient(query)
	s.auth.user = false
	if err != nil {
		return nil, stmtKind{}, "", s.check(err)
	}
	rest := query[len(query)-trailing:]
	kind := stmtKind{writes: s.auth.writes, dml: s.auth.dml}
	if stmt == nil {
		return nil, kind, rest, nil
	}
	if trivia(query[:len(query)-trailing]) {
		// Only blanks, comments and semicolons: SQLite made no statement.
		stmt.Finalize()
		return nil, kind, rest, nil
	}
	if trivia(rest) {
		// A whole single statement: worth caching.
		if len(s.user) >= userStmtCacheSize {
			for k, st := range s.user {
				st.Finalize()
				delete(s.user, k)
				delete(s.kinds, k)
				break
			}
		}
		s.user[query] = stmt
		s.kinds[query] = kind
	}
	return stmt, kind, rest, nil
}

// stmtKind is what the authorizer saw of a statement.
type stmtKind struct {
	writes bool // it changes data or schema: it needs the turn's savepoint
	dml    bool // Changes() counts its rows
}

// release returns a user statement: cached ones are reset, others finalized.
func (s *store) releaseUser(query string, stmt *zs.Stmt) {
	if s.user[query] == stmt {
		stmt.ClearBindings()
		stmt.Reset()
		return
	}
	stmt.Finalize()
}

// trivia reports whether s holds no SQL statement: only whitespace,
// semicolons and comments.
func trivia(s string) bool {
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == ';':
			i++
		case strings.HasPrefix(s[i:], "--"):
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				return true
			}
			i += j + 1
		case strings.HasPrefix(s[i:], "/*"):
			j := strings.Index(s[i+2:], "*/")
			if j < 0 {
				return true
			}
			i += 2 + j + 2
		default:
			return false
		}
	}
	return true
}

func bindArgs(stmt *zs.Stmt, args []any) error {
	if n := stmt.BindParamCount(); n != len(args) {
		return cairn.Errorf(cairn.Invalid, "statement has %d parameters but %d arguments were given", n, len(args))
	}
	for i, a := range args {
		p := i + 1
		switch v := a.(type) {
		case nil:
			stmt.BindNull(p)
		case int:
			stmt.BindInt64(p, int64(v))
		case int8:
			stmt.BindInt64(p, int64(v))
		case int16:
			stmt.BindInt64(p, int64(v))
		case int32:
			stmt.BindInt64(p, int64(v))
		case int64:
			stmt.BindInt64(p, v)
		case uint:
			if uint64(v) > math.MaxInt64 {
				return cairn.Errorf(cairn.Invalid, "argument %d overflows a 64-bit integer", p)
			}
			stmt.BindInt64(p, int64(v))
		case uint8:
			stmt.BindInt64(p, int64(v))
		case uint16:
			stmt.BindInt64(p, int64(v))
		case uint32:
			stmt.BindInt64(p, int64(v))
		case uint64:
			if v > math.MaxInt64 {
				return cairn.Errorf(cairn.Invalid, "argument %d overflows a 64-bit integer", p)
			}
			stmt.BindInt64(p, int64(v))
		case float32:
			stmt.BindFloat(p, float64(v))
		case float64:
			stmt.BindFloat(p, v)
		case bool:
			stmt.BindBool(p, v)
		case string:
			stmt.BindText(p, v)
		case []byte:
			if v == nil {
				stmt.BindNull(p)
			} else {
				stmt.BindBytes(p, v)
			}
		case time.Time:
			stmt.BindInt64(p, v.UnixMilli())
		default:
			return cairn.Errorf(cairn.Invalid, "argument %d has unsupported type %T", p, a)
		}
	}
	return nil
}

func columnValue(stmt *zs.Stmt, i int) any {
	switch stmt.ColumnType(i) {
	case zs.TypeInteger:
		return stmt.ColumnInt64(i)
	case zs.TypeFloat:
		return stmt.ColumnFloat(i)
	case zs.TypeText:
		return stmt.ColumnText(i)
	case zs.TypeBlob:
		b := make([]byte, stmt.ColumnLen(i))
		stmt.ColumnBytes(i, b)
		return b
	}
	return nil
}

// run steps a prepared user statement to completion, collecting rows if
// rows is not nil.
func (s *store) run(stmt *zs.Stmt, kind stmtKind, rows *cairn.Rows) (cairn.Result, error) {
	if kind.writes {
		if err := s.writable(); err != nil {
			return cairn.Result{}, err
		}
	}
	var r cairn.Result
	s.auth.user = true
	defer func() { s.auth.user = false }()
	for {
		row, err := stmt.Step()
		if err != nil {
			return r, s.check(err)
		}
		if !row {
			break
		}
		r.RowsRead++
		if rows != nil {
			n := stmt.ColumnCount()
			vals := make([]any, n)
			for i := 0; i < n; i++ {
				vals[i] = columnValue(stmt, i)
			}
			rows.Values = append(rows.Values, vals)
		}
	}
	if kind.dml {
		r.RowsWritten = int64(s.conn.Changes())
		r.LastInsertID = s.conn.LastInsertRowID()
	}
	return r, nil
}

// Exec implements cairn.Store. With arguments, query must be one statement.
func (s *store) Exec(query string, args ...any) (cairn.Result, error) {
	if strings.IndexByte(query, 0) >= 0 {
		return cairn.Result{}, cairn.Errorf(cairn.Invalid, "SQL text contains a NUL byte")
	}
	if err := s.ensureOpen(); err != nil {
		return cairn.Result{}, err
	}
	var total cairn.Result
	rest := query
	first := true
	for {
		stmt, kind, next, err := s.prepareUser(rest)
		if err != nil {
			return total, err
		}
		if stmt == nil {
			if first {
				return total, cairn.Errorf(cairn.Invalid, "no SQL statement")
			}
			return total, nil
		}
		if first && len(args) > 0 && !trivia(next) {
			s.releaseUser(rest, stmt)
			return total, cairn.Errorf(cairn.Invalid, "arguments can be bound only to a single statement")
		}
		if err := bindArgs(stmt, args); err != nil {
			s.releaseUser(rest, stmt)
			return total, err
		}
		r, err := s.run(stmt, kind, nil)
		s.releaseUser(rest, stmt)
		total.RowsRead += r.RowsRead
		total.RowsWritten += r.RowsWritten
		if r.LastInsertID != 0 {
			total.LastInsertID = r.LastInsertID
		}
		if err != nil {
			return total, err
		}
		first = false
		args = nil
		if trivia(next) {
			return total, nil
		}
		rest = next
	}
}

// Query implements cairn.Store.
func (s *store) Query(query string, args ...any) (*cairn.Rows, error) {
	if strings.IndexByte(query, 0) >= 0 {
		return nil, cairn.Errorf(cairn.Invalid, "SQL text contains a NUL byte")
	}
	if err := s.ensureOpen(); err != nil {
		return nil, err
	}
	stmt, kind, next, err := s.prepareUser(query)
	if err != nil {
		return nil, err
	}
	if stmt == nil {
		return nil, cairn.Errorf(cairn.Invalid, "no SQL statement")
	}
	defer s.releaseUser(query, stmt)
	if !trivia(next) {
		return nil, cairn.Errorf(cairn.Invalid, "Query takes a single statement; use Exec for several")
	}
	if err := bindArgs(stmt, args); err != nil {
		return nil, err
	}
	rows := &cairn.Rows{}
	n := stmt.ColumnCount()
	rows.Columns = make([]string, n)
	for i := 0; i < n; i++ {
		rows.Columns[i] = stmt.ColumnName(i)
	}
	r, err := s.run(stmt, kind, rows)
	rows.RowsRead, rows.RowsWritten = r.RowsRead, r.RowsWritten
	if err != nil {
		return nil, err
	}
	return rows, nil
}
