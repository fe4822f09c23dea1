package fakeanthropic

import "time"

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
