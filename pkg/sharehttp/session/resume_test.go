package session

import "testing"

func TestParseResumePoint(t *testing.T) {
	id := "0123456789abcdef0123456789abcdef"
	tests := []struct {
		in   string
		want *ResumePoint
	}{
		{in: id + ":0", want: &ResumePoint{Session: id, Offset: 0}},
		{in: id + ":123456", want: &ResumePoint{Session: id, Offset: 123456}},
		{in: ""},
		{in: id},
		{in: id + ":-1"},
		{in: id + ":x"},
		{in: "short:1"},
		{in: "0123456789ABCDEF0123456789ABCDEF:1"},
		{in: id + ":99999999999999999999"},
	}
	for _, tc := range tests {
		got, ok := ParseResumePoint(tc.in)
		if (tc.want == nil) == ok || (ok && *got != *tc.want) {
			t.Errorf("ParseResumePoint(%q) = %+v, %v; want %+v", tc.in, got, ok, tc.want)
		}
	}
}
