package session

import (
	"strconv"
	"strings"
)

// ResumePoint is where a page that lost its connection asks to pick its
// session up again: the session's ID and the output offset it had reached.
type ResumePoint struct {
	Session string
	Offset  int64
}

// ParseResumePoint parses the resume query parameter, "<session>:<offset>".
func ParseResumePoint(s string) (*ResumePoint, bool) {
	id, off, ok := strings.Cut(s, ":")
	if !ok || len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, false
	}
	n, err := strconv.ParseInt(off, 10, 64)
	if err != nil || n < 0 {
		return nil, false
	}
	return &ResumePoint{Session: id, Offset: n}, true
}
