package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"

	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

func TestShareFlagValidation(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "plain", args: []string{"team-agent"}},
		{name: "expires in", args: []string{"team-agent", "--expires-in", "24h"}},
		{name: "expires at", args: []string{"team-agent", "--expires-at", "2026-05-02T00:00:00Z"}},
		{name: "ips", args: []string{"team-agent", "--allowed-ips", "10.0.0.0/8,192.168.1.7"}},
		{name: "show", args: []string{"team-agent", "--show"}},
		{name: "rotate", args: []string{"team-agent", "--rotate", "--expires-in", "1h"}},
		{name: "json", args: []string{"team-agent", "-o", "json"}},
		{name: "one-time", args: []string{"team-agent", "--max-uses", "1"}},
		{name: "zero uses", args: []string{"team-agent", "--max-uses", "0"}, wantErr: "invalid --max-uses"},
		{name: "too many uses", args: []string{"team-agent", "--max-uses", "1001"}, wantErr: "invalid --max-uses"},
		{name: "both expiries", args: []string{"team-agent", "--expires-in", "1h", "--expires-at", "2026-05-02T00:00:00Z"}, wantErr: "may not be used together"},
		{name: "zero duration", args: []string{"team-agent", "--expires-in", "0s"}, wantErr: "must be positive"},
		{name: "negative duration", args: []string{"team-agent", "--expires-in=-1h"}, wantErr: "must be positive"},
		{name: "bad duration", args: []string{"team-agent", "--expires-in", "soon"}, wantErr: "invalid argument"},
		{name: "bad time", args: []string{"team-agent", "--expires-at", "tomorrow"}, wantErr: "invalid --expires-at"},
		{name: "past time", args: []string{"team-agent", "--expires-at", "2026-04-30T00:00:00Z"}, wantErr: "must be in the future"},
		{name: "bad cidr", args: []string{"team-agent", "--allowed-ips", "10.0.0.0/8,10.0.0.0/33"}, wantErr: "invalid --allowed-ips"},
		{name: "show with options", args: []string{"team-agent", "--show", "--rotate"}, wantErr: "--show takes no other"},
		{name: "bad output", args: []string{"team-agent", "-o", "xml"}, wantErr: "unable to match a printer"},
		{name: "no name", args: []string{}, wantErr: "accepts 1 arg"},
		{name: "named link", args: []string{"team-agent", "--link", "qa"}},
		{name: "read-only named link", args: []string{"team-agent", "--link", "demo", "--read-only", "--max-viewers", "50"}},
		{name: "show a named link", args: []string{"team-agent", "--show", "--link", "qa"}},
		{name: "bad link name", args: []string{"team-agent", "--link", "QA"}, wantErr: `invalid --link "QA"`},
		{name: "long link name", args: []string{"team-agent", "--link", strings.Repeat("a", 64)}, wantErr: "invalid --link"},
		{name: "zero viewers", args: []string{"team-agent", "--max-viewers", "0"}, wantErr: "invalid --max-viewers"},
		{name: "show read-only", args: []string{"team-agent", "--show", "--read-only"}, wantErr: "--show takes no other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			streams, _, out, _ := genericiooptions.NewTestIOStreams()
			configFlags := genericclioptions.NewConfigFlags(false)
			// Nothing listens here: valid flags get as far as the request and
			// fail to connect; invalid ones must fail before it.
			server := "https://127.0.0.1:1"
			configFlags.APIServer = &server
			o := NewShareOptions(streams)
			o.now = func() time.Time { return now }
			cmd := newCmdShare(configFlags, o)
			cmd.SetArgs(tc.args)
			cmd.SetOut(out)
			cmd.SetErr(out)
			err := cmd.Execute()
			want := tc.wantErr
			if want == "" {
				want = "cannot reach the Kubernetes API server"
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error = %v, want one containing %q", err, want)
			}
		})
	}
}

func TestPrintShare(t *testing.T) {
	exp := metav1.NewTime(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name  string
		share subresourcesv1alpha1.AgentShareStatus
		want  string
	}{
		{
			name:  "brief",
			share: subresourcesv1alpha1.AgentShareStatus{Active: true, Token: "TOKEN", Path: "/s/TOKEN"},
			want:  "Agent:  default/team-agent\nActive: true\nToken:  TOKEN\nPath:   /s/TOKEN\n",
		},
		{
			name: "everything",
			share: subresourcesv1alpha1.AgentShareStatus{
				Active: true, Token: "TOKEN", Path: "/s/TOKEN", URL: "https://share.example.com/s/TOKEN",
				ExpiresAt: &exp, AllowedIPs: []string{"10.0.0.0/8", "192.168.1.0/24"},
			},
			want: "Agent:  default/team-agent\nActive: true\nToken:  TOKEN\nPath:   /s/TOKEN\n" +
				"URL:    https://share.example.com/s/TOKEN\nExpires: 2026-05-01T00:00:00Z\nAllowed IPs: 10.0.0.0/8,192.168.1.0/24\n",
		},
		{
			name: "named view link",
			share: subresourcesv1alpha1.AgentShareStatus{
				Active: true, Link: "demo", Token: "TOKEN", Path: "/s/TOKEN", Mode: "view", Viewers: 2, MaxViewers: ptr.To[int32](50),
			},
			want: "Agent:  default/team-agent\nLink:   demo\nActive: true\nToken:  TOKEN\nPath:   /s/TOKEN\n" +
				"Mode:   view (read-only)\nViewers: 2 of 50\n",
		},
		{
			name:  "default link with named ones",
			share: subresourcesv1alpha1.AgentShareStatus{Active: true, Token: "TOKEN", Path: "/s/TOKEN", Mode: "edit", Viewers: 1, Links: []string{"qa", "demo"}},
			want:  "Agent:  default/team-agent\nActive: true\nToken:  TOKEN\nPath:   /s/TOKEN\nViewers: 1\nNamed links: qa,demo\n",
		},
		{
			name:  "inactive",
			share: subresourcesv1alpha1.AgentShareStatus{Active: false, Reason: "Disabled"},
			want:  "Agent:  default/team-agent\nActive: false\nReason: Disabled\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			PrintShare(&out, "default", "team-agent", &subresourcesv1alpha1.AgentShare{Status: tc.share})
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}
