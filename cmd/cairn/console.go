package main

import (
	"github.com/cairn-dev/cairn/console"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// consoleRoutes mounts the web console: its page at "/" exactly and its
// assets under console.Prefix, both public (the page asks for the admin
// token itself and sends it with each API call). Every other path still
// reaches the API's routes or its JSON 404.
func consoleRoutes() []cairnhttp.Route {
	h := console.Handler()
	return []cairnhttp.Route{
		{Pattern: "GET /{$}", Handler: h, Public: true, Name: "console"},
		{Pattern: "GET " + console.Prefix, Handler: h, Public: true, Name: "console"},
	}
}
