package http

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls a cairn server's API.
type Client struct {
	URL   string // base URL, e.g. http://127.0.0.1:8420
	Token string // bearer token, if the server has auth on
	HTTP  *http.Client
}

// NewClient returns a client for the server at baseURL.
func NewClient(baseURL, token string) *Client {
	return &Client{URL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// APIError is an error response of the server.
type APIError struct {
	Status  int
	Code    string
	Message string
}

// Error describes the error response.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// ObjectPath returns the escaped path of an object under prefix.
func ObjectPath(prefix, ns, name string) string {
	return prefix + "/" + Segment(ns) + "/" + Segment(name)
}

// Segment escapes s as one path segment: '/' becomes %2F and the segments
// "." and ".." are escaped too, so that nothing cleans or redirects them.
func Segment(s string) string {
	e := url.PathEscape(s)
	switch e {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return e
}

// Do sends a request and returns the response body of a 2xx answer, or an
// *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, contentType string) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
			return nil, &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return nil, &APIError{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Message: strings.TrimSpace(string(b))}
	}
	return b, nil
}

// JSON sends v (if not nil) as JSON and decodes the answer into out (if not
// nil).
func (c *Client) JSON(ctx context.Context, method, path string, v, out any) error {
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return err
		}
	}
	b, err := c.Do(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// ErrorCode returns the cairn code of an API error ("unauthorized" and
// "forbidden" included), or "" for transport errors.
func ErrorCode(err error) string {
	if e, ok := err.(*APIError); ok {
		return e.Code
	}
	return ""
}
