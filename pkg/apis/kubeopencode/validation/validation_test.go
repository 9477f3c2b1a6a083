package validation

import (
	"testing"
)

func TestParseIPOrCIDR(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "192.168.1.7", want: "192.168.1.7/32"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "::ffff:10.0.0.1", want: "10.0.0.1/32"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "", wantErr: true},
		{in: "10.0.0.0/33", wantErr: true},
		{in: "10.0.0", wantErr: true},
		{in: "fe80::1%eth0", wantErr: true},
		{in: "example.com", wantErr: true},
		{in: "10.0.0.0/8/8", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseIPOrCIDR(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseIPOrCIDR(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			}
			if err == nil && got.String() != tc.want {
				t.Errorf("ParseIPOrCIDR(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzParseIPOrCIDR checks that no input panics the parser and that what it
// accepts is canonical: parsing its own output gives the same range.
func FuzzParseIPOrCIDR(f *testing.F) {
	for _, seed := range []string{"10.0.0.0/8", "192.168.1.7", "::1", "::ffff:10.0.0.1/104", "fe80::1%eth0", "1.2.3.4/33", "", "/", "1.2.3.4/-1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseIPOrCIDR(s)
		if err != nil {
			return
		}
		again, err := ParseIPOrCIDR(p.String())
		if err != nil || again != p {
			t.Fatalf("%q parsed to %s, which parses to %s, %v", s, p, again, err)
		}
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("%q parsed to non-canonical %s", s, p)
		}
	})
}
