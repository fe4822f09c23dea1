package fakeanthropic

import (
	"regexp"
	"time"
)

// IssueSetupToken mints a long-lived, non-rotating inference token, as
// `claude setup-token` does.
func (s *Server) IssueSetupToken(lifetime time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.families++
	tok := token("sk-ant-oat01-setup-")
	s.access[tok] = &access{expires: s.Now().Add(lifetime), family: s.families}
	return tok
}

// Mask hides anything token-shaped in a line a test wants to log.
func Mask(s string) string { return tokenShape.ReplaceAllString(s, "[redacted]") }

var tokenShape = regexp.MustCompile(`sk-ant-[A-Za-z0-9_\-]+`)
