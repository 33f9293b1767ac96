//go:build cairn_deps_pin

package cairn

// This file is never built: it keeps the modules that packages in progress
// use listed in go.mod, so that `go mod tidy` between their commits does
// not drop them. Remove an import once a real package uses it.
import (
	_ "github.com/anthropics/anthropic-sdk-go/v2"
	_ "github.com/johannesboyne/gofakes3"
	_ "github.com/minio/minio-go/v7"
	_ "github.com/modelcontextprotocol/go-sdk/mcp"
	_ "github.com/robfig/cron/v3"
)
