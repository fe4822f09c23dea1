package fakemcp

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// authorize checks the bearer and tells its index in Issued() (-2: none).
func (s *Server) authorize(r *http.Request) (ok bool, index int) {
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		return false, -2
	}
	tok := strings.TrimPrefix(h, "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	index = s.indexLocked(tok)
	a, found := s.access[tok]
	return found && !a.revoked && s.now().Before(a.expires), index
}

// serveMCP is a Streamable HTTP MCP endpoint answering with plain JSON.
func (s *Server) serveMCP(w http.ResponseWriter, r *http.Request) {
	rec := MCPRequest{At: time.Now(), HTTPMethod: r.Method, UserAgent: r.UserAgent()}
	body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	var msg rpcRequest
	if r.Method == http.MethodPost {
		_ = json.Unmarshal(body, &msg)
		rec.Method = msg.Method
	}
	ok, idx := s.authorize(r)
	rec.BearerIndex = idx
	done := func(status int) {
		rec.Status = status
		s.mu.Lock()
		s.mcpReq = append(s.mcpReq, rec)
		if status == http.StatusUnauthorized {
			s.counters.FailedToolCalls++
		} else if r.Method == http.MethodPost {
			s.counters.MCPRequests++
		}
		s.mu.Unlock()
	}
	if !ok {
		v := `Bearer resource_metadata="` + s.URL() + `/.well-known/oauth-protected-resource"`
		if idx != -2 {
			v = `Bearer error="invalid_token", error_description="the access token is invalid or expired", resource_metadata="` +
				s.URL() + `/.well-known/oauth-protected-resource"`
		}
		w.Header().Set("WWW-Authenticate", v)
		done(http.StatusUnauthorized)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": "authentication required"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		done(http.StatusMethodNotAllowed)
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	if msg.Method == "" {
		done(http.StatusBadRequest)
		writeJSON(w, http.StatusBadRequest, rpcResponse{JSONRPC: "2.0", ID: json.RawMessage("null"),
			Error: &rpcError{Code: -32700, Message: "parse error (batches are not supported)"}})
		return
	}
	if len(msg.ID) == 0 { // a notification
		done(http.StatusAccepted)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	resp := rpcResponse{JSONRPC: "2.0", ID: msg.ID}
	switch msg.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string `json:"protocolVersion"`
		}
		_ = json.Unmarshal(msg.Params, &p)
		if p.ProtocolVersion == "" {
			p.ProtocolVersion = "2025-06-18"
		}
		resp.Result = map[string]any{
			"protocolVersion": p.ProtocolVersion,
			"capabilities":    map[string]any{"tools": map[string]any{"listChanged": false}},
			"serverInfo":      map[string]string{"name": "fakemcp", "version": "1.0.0"},
		}
	case "ping":
		resp.Result = map[string]any{}
	case "tools/list":
		o := s.Options()
		resp.Result = map[string]any{"tools": []map[string]any{{
			"name":        o.ToolName,
			"description": "Answers " + o.ToolText + ".",
			"inputSchema": map[string]any{"type": "object", "properties": map[string]any{}},
		}}}
	case "tools/call":
		var p struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(msg.Params, &p)
		o := s.Options()
		if p.Name != o.ToolName {
			resp.Error = &rpcError{Code: -32602, Message: "unknown tool " + p.Name}
			break
		}
		s.mu.Lock()
		s.counters.ToolCalls++
		s.mu.Unlock()
		resp.Result = map[string]any{"content": []map[string]string{{"type": "text", "text": o.ToolText}}, "isError": false}
	case "resources/list":
		resp.Result = map[string]any{"resources": []any{}}
	case "prompts/list":
		resp.Result = map[string]any{"prompts": []any{}}
	default:
		resp.Error = &rpcError{Code: -32601, Message: "method not found: " + msg.Method}
	}
	done(http.StatusOK)
	writeJSON(w, http.StatusOK, resp)
}
