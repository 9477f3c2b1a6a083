package share

import (
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != TokenLength || !ValidToken(tok) {
			t.Fatalf("token %q: length %d, valid %v", tok, len(tok), ValidToken(tok))
		}
		if seen[tok] {
			t.Fatalf("token %q made twice", tok)
		}
		seen[tok] = true
	}
}

func TestValidToken(t *testing.T) {
	good, _ := NewToken()
	tests := []struct {
		name  string
		token string
		want  bool
	}{
		{"fresh", good, true},
		{"empty", "", false},
		{"short", good[:42], false},
		{"long", good + "A", false},
		{"padding", good[:42] + "=", false},
		{"std alphabet", strings.Repeat("+", TokenLength), false},
		{"slash", strings.Repeat("A", 42) + "/", false},
		{"dot dot", "../" + strings.Repeat("A", 40), false},
		{"non-canonical last char", strings.Repeat("A", 42) + "B", false},
		{"canonical last char", strings.Repeat("A", 42) + "E", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidToken(tc.token); got != tc.want {
				t.Errorf("ValidToken(%q) = %v, want %v", tc.token, got, tc.want)
			}
		})
	}
}

func TestTokenHashAndCompare(t *testing.T) {
	a, _ := NewToken()
	b, _ := NewToken()
	if TokenHash(a) == TokenHash(b) || len(TokenHash(a)) != 64 {
		t.Errorf("hashes of two tokens: %q, %q", TokenHash(a), TokenHash(b))
	}
	if !TokensEqual(a, a) || TokensEqual(a, b) || TokensEqual(a, a[:42]) {
		t.Error("TokensEqual gives wrong answers")
	}
}

func TestURL(t *testing.T) {
	tests := []struct{ base, token, want string }{
		{"", "T", ""},
		{"https://share.example.com", "T", "https://share.example.com/s/T"},
		{"https://share.example.com/", "T", "https://share.example.com/s/T"},
		{"https://example.com/kubeopencode", "T", "https://example.com/kubeopencode/s/T"},
	}
	for _, tc := range tests {
		if got := URL(tc.base, tc.token); got != tc.want {
			t.Errorf("URL(%q, %q) = %q, want %q", tc.base, tc.token, got, tc.want)
		}
	}
}

func TestValidateBaseURL(t *testing.T) {
	for _, good := range []string{"https://a.example.com", "http://127.0.0.1:8443", "https://example.com/base"} {
		if err := ValidateBaseURL(good); err != nil {
			t.Errorf("ValidateBaseURL(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"", "example.com", "ftp://example.com", "https://", "https://u:p@example.com", "https://example.com/?q=1"} {
		if err := ValidateBaseURL(bad); err == nil {
			t.Errorf("ValidateBaseURL(%q) accepted", bad)
		}
	}
}
