package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeClient(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Message
		wantErr string
	}{
		{name: "data", in: []byte{OpData, 'l', 's', '\r'}, want: Message{Op: OpData, Data: []byte("ls\r")}},
		{name: "empty data", in: []byte{OpData}, want: Message{Op: OpData, Data: []byte{}}},
		{name: "resize", in: append([]byte{OpResize}, `{"cols":120,"rows":40}`...), want: Message{Op: OpResize, Size: Size{Cols: 120, Rows: 40}}},
		{name: "resize spaced", in: append([]byte{OpResize}, ` { "rows": 1, "cols": 1000 } `...), want: Message{Op: OpResize, Size: Size{Cols: 1000, Rows: 1}}},
		{name: "ack", in: []byte{OpAck, 0, 1, 0, 0}, want: Message{Op: OpAck, Ack: 65536}},
		{name: "nothing", in: nil, wantErr: "empty"},
		{name: "unknown op", in: []byte{0x7f, 1}, wantErr: "unknown opcode 0x7f"},
		{name: "status from client", in: append([]byte{OpStatus}, `{"reason":"x"}`...), wantErr: "unknown opcode"},
		{name: "too large", in: append([]byte{OpData}, bytes.Repeat([]byte{'a'}, MaxClientMessage)...), wantErr: "larger than"},
		{name: "resize zero", in: append([]byte{OpResize}, `{"cols":0,"rows":40}`...), wantErr: "outside"},
		{name: "resize huge", in: append([]byte{OpResize}, `{"cols":80,"rows":1001}`...), wantErr: "outside"},
		{name: "resize negative", in: append([]byte{OpResize}, `{"cols":-1,"rows":40}`...), wantErr: "outside"},
		{name: "resize overflow", in: append([]byte{OpResize}, `{"cols":65616,"rows":40}`...), wantErr: "outside"},
		{name: "resize missing rows", in: append([]byte{OpResize}, `{"cols":80}`...), wantErr: "required"},
		{name: "resize unknown field", in: append([]byte{OpResize}, `{"cols":80,"rows":24,"x":1}`...), wantErr: "unknown field"},
		{name: "resize trailing", in: append([]byte{OpResize}, `{"cols":80,"rows":24}{}`...), wantErr: "trailing"},
		{name: "resize not json", in: append([]byte{OpResize}, `80x24`...), wantErr: "resize"},
		{name: "resize float", in: append([]byte{OpResize}, `{"cols":80.5,"rows":24}`...), wantErr: "resize"},
		{name: "resize long", in: append([]byte{OpResize}, `{"cols":80,"rows":24`+strings.Repeat(" ", 300)+`}`...), wantErr: "too large"},
		{name: "ack short", in: []byte{OpAck, 0, 1}, wantErr: "want 4"},
		{name: "ack long", in: []byte{OpAck, 0, 1, 0, 0, 0}, wantErr: "want 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeClient(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DecodeClient() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeClient(): %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DecodeClient() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	for _, b := range [][]byte{EncodeData([]byte("echo hi\r")), EncodeResize(Size{Cols: 80, Rows: 24}), EncodeAck(4096)} {
		m, err := DecodeClient(b)
		if err != nil {
			t.Fatalf("decoding %q: %v", b, err)
		}
		if again := encode(m); !bytes.Equal(again, b) {
			t.Errorf("round trip: %q became %q", b, again)
		}
	}
	code := 3
	if got := string(EncodeStatus(Status{Reason: "Exited", Message: "bye", ExitCode: &code})); got != "\x02"+`{"reason":"Exited","message":"bye","exitCode":3}` {
		t.Errorf("EncodeStatus() = %q", got)
	}
}

func encode(m Message) []byte {
	switch m.Op {
	case OpData:
		return EncodeData(m.Data)
	case OpResize:
		return EncodeResize(m.Size)
	case OpAck:
		return EncodeAck(m.Ack)
	}
	return nil
}

// FuzzDecodeClient checks that no input makes the decoder panic, and that
// whatever it accepts re-encodes to a message it decodes the same way.
func FuzzDecodeClient(f *testing.F) {
	for _, seed := range [][]byte{
		EncodeData([]byte("ls -la\r")), EncodeResize(Size{Cols: 80, Rows: 24}), EncodeAck(1),
		{}, {0xff}, []byte("\x01{\"cols\":1e3,\"rows\":1}"), []byte("\x01{\"cols\":80,\"rows\":24,\"cols\":90}"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeClient(b)
		if err != nil {
			return
		}
		again, err := DecodeClient(encode(m))
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", m, err)
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("round trip changed the message (-first +second):\n%s", diff)
		}
	})
}
