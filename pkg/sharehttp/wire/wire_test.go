package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func resize(json string) []byte { return append([]byte{OpResize}, json...) }

func TestDecodeClient(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Message
		wantErr string
	}{
		{name: "data", in: []byte{OpData, 'l', 's', '\r'}, want: Message{Op: OpData, Data: []byte("ls\r")}},
		{name: "empty data", in: []byte{OpData}, want: Message{Op: OpData, Data: []byte{}}},
		{name: "binary data", in: []byte{OpData, 0, 0xff, 0x1b}, want: Message{Op: OpData, Data: []byte{0, 0xff, 0x1b}}},
		{name: "largest data", in: append([]byte{OpData}, bytes.Repeat([]byte{'a'}, MaxClientMessage-1)...),
			want: Message{Op: OpData, Data: bytes.Repeat([]byte{'a'}, MaxClientMessage-1)}},
		{name: "resize", in: resize(`{"cols":120,"rows":40}`), want: Message{Op: OpResize, Size: Size{Cols: 120, Rows: 40}}},
		{name: "resize rows first, spaced", in: resize(" {\t\"rows\" : 1 ,\r\n \"cols\":1000 } \n"), want: Message{Op: OpResize, Size: Size{Cols: 1000, Rows: 1}}},
		{name: "ack", in: []byte{OpAck, 0, 1, 0, 0}, want: Message{Op: OpAck, Ack: 65536}},
		{name: "ack max", in: []byte{OpAck, 0xff, 0xff, 0xff, 0xff}, want: Message{Op: OpAck, Ack: 1<<32 - 1}},

		{name: "nothing", in: nil, wantErr: "empty"},
		{name: "unknown opcode", in: []byte{0x7f, 1}, wantErr: "unknown opcode 0x7f"},
		{name: "status from the page", in: append([]byte{OpStatus}, `{"reason":"x"}`...), wantErr: "unknown opcode 0x02"},
		{name: "too large", in: append([]byte{OpData}, bytes.Repeat([]byte{'a'}, MaxClientMessage)...), wantErr: "too large"},
		{name: "resize empty", in: resize(``), wantErr: "want '{', got the end"},
		{name: "resize zero", in: resize(`{"cols":0,"rows":40}`), wantErr: "integer in 1..1000"},
		{name: "resize huge", in: resize(`{"cols":80,"rows":1001}`), wantErr: "integer in 1..1000"},
		{name: "resize five digits", in: resize(`{"cols":80,"rows":10000}`), wantErr: "integer in 1..1000"},
		{name: "resize overflow", in: resize(`{"cols":65616,"rows":40}`), wantErr: "integer in 1..1000"},
		{name: "resize negative", in: resize(`{"cols":-1,"rows":40}`), wantErr: "integer in 1..1000"},
		{name: "resize leading zero", in: resize(`{"cols":080,"rows":40}`), wantErr: "integer in 1..1000"},
		{name: "resize float", in: resize(`{"cols":80.0,"rows":24}`), wantErr: "integer in 1..1000"},
		{name: "resize exponent", in: resize(`{"cols":8e1,"rows":24}`), wantErr: "integer in 1..1000"},
		{name: "resize string number", in: resize(`{"cols":"80","rows":24}`), wantErr: "integer in 1..1000"},
		{name: "resize missing rows", in: resize(`{"cols":80}`), wantErr: "want ','"},
		{name: "resize repeated member", in: resize(`{"cols":80,"cols":90}`), wantErr: "repeated member"},
		{name: "resize third member", in: resize(`{"cols":80,"rows":24,"x":1}`), wantErr: "want '}'"},
		{name: "resize other case", in: resize(`{"Cols":80,"rows":24}`), wantErr: `want "cols" or "rows"`},
		{name: "resize escaped name", in: resize(`{"\u0063ols":80,"rows":24}`), wantErr: `want "cols" or "rows"`},
		{name: "resize trailing", in: resize(`{"cols":80,"rows":24}{}`), wantErr: "trailing data"},
		{name: "resize trailing comma", in: resize(`{"cols":80,"rows":24,}`), wantErr: "want '}'"},
		{name: "resize not json", in: resize(`80x24`), wantErr: "want '{'"},
		{name: "resize array", in: resize(`[80,24]`), wantErr: "want '{'"},
		{name: "resize too long", in: resize(`{"cols":80,"rows":24` + strings.Repeat(" ", MaxResizePayload) + `}`), wantErr: "at most 256"},
		{name: "ack short", in: []byte{OpAck, 0, 1}, wantErr: "want 4"},
		{name: "ack long", in: []byte{OpAck, 0, 1, 0, 0, 0}, wantErr: "want 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeClient(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DecodeClient() error = %v, want one containing %q", err, tc.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("DecodeClient() error %v does not wrap ErrInvalid", err)
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

func TestDecodeServer(t *testing.T) {
	code := 3
	tests := []struct {
		name    string
		in      []byte
		want    Message
		wantErr string
	}{
		{name: "data", in: []byte("\x00hi\r\n"), want: Message{Op: OpData, Data: []byte("hi\r\n")}},
		{name: "status", in: []byte("\x02" + `{"reason":"Exited","message":"bye","exitCode":3}`),
			want: Message{Op: OpStatus, Status: &Status{Reason: ReasonExited, Message: "bye", ExitCode: &code}}},
		{name: "status with a field from a newer server", in: []byte("\x02" + `{"reason":"Revoked","retryAfter":5}`),
			want: Message{Op: OpStatus, Status: &Status{Reason: ReasonRevoked}}},

		{name: "nothing", in: nil, wantErr: "empty"},
		{name: "resize from the server", in: EncodeResize(Size{Cols: 1, Rows: 1}), wantErr: "unknown opcode 0x01"},
		{name: "ack from the server", in: EncodeAck(1), wantErr: "unknown opcode 0x03"},
		{name: "status without reason", in: []byte("\x02" + `{"message":"x"}`), wantErr: "without a reason"},
		{name: "status not json", in: []byte("\x02Revoked"), wantErr: "status"},
		{name: "status exit code not a number", in: []byte("\x02" + `{"reason":"Exited","exitCode":"3"}`), wantErr: "status"},
		{name: "status too large", in: append([]byte("\x02"+`{"reason":"Exited","message":"`), bytes.Repeat([]byte{'a'}, MaxStatusPayload)...), wantErr: "too large"},
		{name: "too large", in: append([]byte{OpData}, bytes.Repeat([]byte{'a'}, MaxServerMessage)...), wantErr: "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeServer(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("DecodeServer() error = %v, want one containing %q and wrapping ErrInvalid", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeServer(): %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DecodeServer() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncode(t *testing.T) {
	code := 0
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{name: "data", got: EncodeData([]byte("ls\r")), want: "\x00ls\r"},
		{name: "empty data", got: EncodeData(nil), want: "\x00"},
		{name: "resize", got: EncodeResize(Size{Cols: 80, Rows: 24}), want: "\x01" + `{"cols":80,"rows":24}`},
		{name: "ack", got: EncodeAck(0x01020304), want: "\x03\x01\x02\x03\x04"},
		{name: "status", got: EncodeStatus(Status{Reason: ReasonExited, Message: "The session ended.", ExitCode: &code}),
			want: "\x02" + `{"reason":"Exited","message":"The session ended.","exitCode":0}`},
		{name: "status without message", got: EncodeStatus(Status{Reason: ReasonRevoked}), want: "\x02" + `{"reason":"Revoked"}`},
		{name: "append to a buffer", got: AppendAck(AppendData([]byte("x"), []byte("y")), 7), want: "x\x00y\x03\x00\x00\x00\x07"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, string(tc.got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeStatusShortensLongMessages(t *testing.T) {
	// A two-byte character straddles the cut.
	long := "x" + strings.Repeat("é", MaxStatusMessage)
	m, err := DecodeServer(EncodeStatus(Status{Reason: ReasonError, Message: long}))
	if err != nil {
		t.Fatal(err)
	}
	msg := m.Status.Message
	if len(msg) > MaxStatusMessage || !strings.HasSuffix(msg, "…") || !strings.HasPrefix(long, strings.TrimSuffix(msg, "…")) {
		t.Errorf("shortened to %d bytes: %q", len(msg), msg)
	}
}

func TestDecodeClientDoesNotAllocate(t *testing.T) {
	msgs := [][]byte{EncodeData([]byte("ls\r")), EncodeResize(Size{Cols: 132, Rows: 43}), EncodeAck(4096)}
	allocs := testing.AllocsPerRun(100, func() {
		for _, b := range msgs {
			if _, err := DecodeClient(b); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("DecodeClient allocates %.0f times for valid messages", allocs)
	}
}

func TestSizeValid(t *testing.T) {
	for _, tc := range []struct {
		size Size
		want bool
	}{
		{Size{Cols: 1, Rows: 1}, true}, {Size{Cols: 1000, Rows: 1000}, true},
		{Size{Cols: 0, Rows: 24}, false}, {Size{Cols: 80, Rows: 1001}, false},
	} {
		if got := tc.size.Valid(); got != tc.want {
			t.Errorf("%+v.Valid() = %v, want %v", tc.size, got, tc.want)
		}
	}
}

// encode re-encodes a decoded message.
func encode(m Message) []byte {
	switch m.Op {
	case OpData:
		return EncodeData(m.Data)
	case OpResize:
		return EncodeResize(m.Size)
	case OpAck:
		return EncodeAck(m.Ack)
	case OpStatus:
		return EncodeStatus(*m.Status)
	}
	return nil
}

// FuzzDecode checks that no input makes either decoder panic, and that
// whatever a decoder accepts re-encodes to a message it decodes the same
// way.
func FuzzDecode(f *testing.F) {
	code := 1
	for _, seed := range [][]byte{
		EncodeData([]byte("ls -la\r")), EncodeResize(Size{Cols: 80, Rows: 24}), EncodeAck(1),
		EncodeStatus(Status{Reason: ReasonExited, Message: "bye", ExitCode: &code}),
		{}, {0xff}, resize(`{"cols":1e3,"rows":1}`), resize(`{"cols":80,"rows":24,"cols":90}`),
		resize(` { "rows" : 1000 , "cols" : 1 } `), []byte("\x02" + `{"reason":"Revoked","x":[1,{"y":null}]}`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, side := range []struct {
			name   string
			decode func([]byte) (Message, error)
		}{{"DecodeClient", DecodeClient}, {"DecodeServer", DecodeServer}} {
			m, err := side.decode(b)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%s error %v does not wrap ErrInvalid", side.name, err)
				}
				continue
			}
			if m.Op == OpResize && !m.Size.Valid() {
				t.Fatalf("%s accepted the size %+v", side.name, m.Size)
			}
			again, err := side.decode(encode(m))
			if err != nil {
				t.Fatalf("%s: re-encoded %+v does not decode: %v", side.name, m, err)
			}
			if m.Op == OpStatus && len(m.Status.Message) > MaxStatusMessage {
				// EncodeStatus shortened it; shortening again changes nothing.
				m = again
				if again, err = side.decode(encode(m)); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(m, again); diff != "" {
				t.Fatalf("%s: round trip changed the message (-first +second):\n%s", side.name, diff)
			}
		}
	})
}
