package fakeanthropic

import (
	"encoding/json"
	"strings"
)

// SetMCPTool makes the messages endpoint drive one MCP tool call (opt-in; ""
// turns it off, the default): when a request offers a tool named
// mcp__<server>__<tool>, and its last message carries no tool_result, the
// fake answers a tool_use of that tool (empty input, stop_reason "tool_use");
// once the client sends the tool_result back, it answers the result's text.
// Requests that offer no such tool are answered with Reply as before.
func (s *Server) SetMCPTool(tool string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.toolSuffix = tool
}

// ToolUses lists the tool names the fake asked a client to call, in order.
func (s *Server) ToolUses() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.toolUses...)
}

// ToolResults lists the texts of the tool_results clients sent back, in order.
func (s *Server) ToolResults() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.toolResults...)
}

// messagesRequest is the part of a /v1/messages request the fake reads.
type messagesRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools []struct {
		Name string `json:"name"`
	} `json:"tools"`
}

// mcpTool finds an offered tool mcp__<server>__<suffix>.
func (r *messagesRequest) mcpTool(suffix string) (string, bool) {
	for _, t := range r.Tools {
		if strings.HasPrefix(t.Name, "mcp__") && strings.HasSuffix(t.Name, "__"+suffix) && len(t.Name) > len("mcp__")+len("__"+suffix) {
			return t.Name, true
		}
	}
	return "", false
}

// lastToolResult returns the text of a tool_result in the last user message,
// if any (newer clients append role "system" messages after it: skipped).
func (r *messagesRequest) lastToolResult() (string, bool) {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return toolResult(r.Messages[i].Content)
		}
	}
	return "", false
}

// toolResult returns the text of the first tool_result block of a message's
// content.
func toolResult(content json.RawMessage) (string, bool) {
	var blocks []struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
		IsError bool            `json:"is_error"`
	}
	if json.Unmarshal(content, &blocks) != nil {
		return "", false // a plain string: no tool_result
	}
	for _, b := range blocks {
		if b.Type != "tool_result" {
			continue
		}
		var text string
		if json.Unmarshal(b.Content, &text) != nil {
			var parts []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			}
			_ = json.Unmarshal(b.Content, &parts)
			var sb strings.Builder
			for _, p := range parts {
				if p.Type == "text" {
					sb.WriteString(p.Text)
				}
			}
			text = sb.String()
		}
		if b.IsError {
			text = "TOOL_ERROR: " + text
		}
		return text, true
	}
	return "", false
}
