package main

import (
	"github.com/cairn-dev/cairn/agent"
	cairnhttp "github.com/cairn-dev/cairn/http"
)

// agentSDKRoutes mounts the Cloudflare Agents SDK's protocol at
// /agents/{agent}/{session} (see docs/agents-sdk.md), with the auth of
// /v1/agents: a token that may reach namespace "agent". A browser, which
// cannot send Authorization on a WebSocket, offers the token as the
// subprotocol cairnhttp.TokenSubprotocol makes, next to "cairn".
func agentSDKRoutes(svc *agent.Service) []cairnhttp.Route {
	return []cairnhttp.Route{{Pattern: "/agents/", Handler: svc.SDKHandler(), Namespace: agent.Namespace, Name: "agents-sdk"}}
}
