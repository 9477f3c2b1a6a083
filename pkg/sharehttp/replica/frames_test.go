package replica

import (
	"bytes"
	"testing"
)

// clientFrame returns a masked frame, as a page sends one.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b := serverFrame(op, payload)
	if !fin {
		b[0] &^= finBit
	}
	header := frameHeaderLen(b)
	mask := []byte{1, 2, 3, 4}
	out := append([]byte{b[0], b[1] | maskBit}, b[2:header]...)
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

func fragment(fin bool, op byte, payload []byte) []byte {
	b := serverFrame(op, payload)
	if !fin {
		b[0] &^= finBit
	}
	return b
}

func TestFrameScanner(t *testing.T) {
	long := bytes.Repeat([]byte{'x'}, 300)
	huge := bytes.Repeat([]byte{'y'}, 70000)
	for _, tc := range []struct {
		name            string
		stream          []byte
		betweenMessages bool
		closed          bool
	}{
		{name: "nothing yet", stream: nil, betweenMessages: true},
		{name: "one short message", stream: serverFrame(opBinary, []byte("\x00hi")), betweenMessages: true},
		{name: "a 16-bit length", stream: serverFrame(opBinary, long), betweenMessages: true},
		{name: "a 64-bit length", stream: serverFrame(opBinary, huge), betweenMessages: true},
		{name: "masked frames of a page", stream: append(clientFrame(true, opBinary, long), clientFrame(true, opBinary, []byte("a"))...), betweenMessages: true},
		{name: "a header cut short", stream: serverFrame(opBinary, long)[:3]},
		{name: "a payload cut short", stream: serverFrame(opBinary, long)[:100]},
		{name: "a message awaiting its last fragment", stream: fragment(false, opBinary, []byte("a"))},
		{name: "a ping between fragments", stream: append(fragment(false, opBinary, []byte("a")), serverFrame(0x9, nil)...)},
		{name: "fragments completed", stream: bytes.Join([][]byte{
			fragment(false, opBinary, []byte("a")), serverFrame(0x9, nil), fragment(true, 0x0, []byte("b"))}, nil), betweenMessages: true},
		{name: "a close", stream: append(serverFrame(opBinary, []byte("a")), closeFrame(1000, "Exited")...), betweenMessages: true, closed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// However the stream is cut into reads.
			for cut := 0; cut <= len(tc.stream); cut += max(1, len(tc.stream)/97) {
				var s frameScanner
				s.scan(tc.stream[:cut])
				s.scan(tc.stream[cut:])
				if s.betweenMessages() != tc.betweenMessages || s.closed != tc.closed {
					t.Fatalf("cut at %d: betweenMessages %v, closed %v; want %v, %v", cut, s.betweenMessages(), s.closed, tc.betweenMessages, tc.closed)
				}
			}
		})
	}
}
