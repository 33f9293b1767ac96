package http_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cairn-dev/cairn"
	cairnhttp "github.com/cairn-dev/cairn/http"
	"github.com/cairn-dev/cairn/sqlite"
)

func TestExtraRouteScopes(t *testing.T) {
	eng, err := sqlite.Open(t.TempDir(), cairn.Process)
	if err != nil {
		t.Fatal(err)
	}
	rt := cairn.NewRuntime(eng)
	if err := rt.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt.Close(ctx)
	})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := cairnhttp.NewServer(rt)
	srv.Tokens = []cairnhttp.Token{
		{Name: "admin", Secret: "admin-secret-0123456789", Admin: true},
		{Name: "agents", Secret: "agent-secret-0123456789", Namespaces: []string{"agent"}},
		{Name: "kv", Secret: "kvkv-secret-0123456789", Namespaces: []string{"kv"}},
	}
	srv.Routes = []cairnhttp.Route{
		{Pattern: "/scoped", Handler: ok, Namespace: "agent"},
		{Pattern: "/admin-only", Handler: ok},
		{Pattern: "/public", Handler: ok, Public: true},
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	for _, c := range []struct {
		path, secret string
		want         int
	}{
		{"/scoped", "", http.StatusUnauthorized},
		{"/scoped", "kvkv-secret-0123456789", http.StatusForbidden},
		{"/scoped", "agent-secret-0123456789", http.StatusOK},
		{"/scoped", "admin-secret-0123456789", http.StatusOK},
		{"/admin-only", "agent-secret-0123456789", http.StatusForbidden},
		{"/admin-only", "admin-secret-0123456789", http.StatusOK},
		{"/public", "", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", ts.URL+c.path, nil)
		if c.secret != "" {
			req.Header.Set("Authorization", "Bearer "+c.secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s with %q: got %d, want %d", c.path, c.secret, resp.StatusCode, c.want)
		}
	}
}
