package share

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
)

const (
	// TokenBytes is the number of random bytes in a token: 256 bits.
	TokenBytes = 32
	// TokenLength is the length of an encoded token.
	TokenLength = 43
	// PathPrefix starts the path of every share link.
	PathPrefix = "/s/"
)

var tokenEncoding = base64.RawURLEncoding

// NewToken returns a new token: 32 bytes from crypto/rand, base64url-encoded
// without padding.
func NewToken() (string, error) {
	b := make([]byte, TokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes for a share token: %w", err)
	}
	return tokenEncoding.EncodeToString(b), nil
}

// ValidToken reports whether s has the form of a token. It says nothing of
// whether the token is known; it lets callers refuse junk before looking up.
func ValidToken(s string) bool {
	if len(s) != TokenLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	// The last character carries 4 padding bits that must be zero, so that
	// each token has exactly one encoding.
	_, err := tokenEncoding.Strict().DecodeString(s)
	return err == nil
}

// TokenHash returns the hex SHA-256 of a token. Caches index tokens by hash so
// that a lookup neither keeps nor compares the secret value as a map key.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// TokensEqual compares two tokens in constant time.
func TokensEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Path returns the path of the share link with the given token.
func Path(token string) string {
	return PathPrefix + token
}

// URL returns the share link for a token under the public base URL, or "" when
// no base URL is known.
func URL(baseURL, token string) string {
	if baseURL == "" {
		return ""
	}
	return strings.TrimSuffix(baseURL, "/") + Path(token)
}

// ValidateBaseURL checks a public base URL such as https://share.example.com.
func ValidateBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid public URL %q: %w", s, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("invalid public URL %q: scheme must be http or https", s)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("invalid public URL %q: want scheme://host[:port][/path] only", s)
	}
	return nil
}
