package replica

import (
	"encoding/binary"
)

// WebSocket opcodes and header bits (RFC 6455 5.2) the relay looks at.
const (
	opClose    = 0x8
	opBinary   = 0x2
	finBit     = 0x80
	maskBit    = 0x80
	opcodeBits = 0x0f
)

// frameScanner follows the frames of one direction of a WebSocket byte by
// byte, without holding their payloads, to know where the stream stands:
// between messages, inside one, or past a close frame. The relay reads
// nothing else of the stream; it passes the bytes on as they are.
type frameScanner struct {
	header    [14]byte
	headerLen int
	remaining uint64 // payload bytes of the current frame still to come
	// fragmented is set inside a data message whose last frame has not
	// come yet: nothing but control frames may go until it has.
	fragmented bool
	closed     bool // a close frame has started
}

// scan follows the stream through p.
func (s *frameScanner) scan(p []byte) {
	for len(p) > 0 {
		if s.remaining > 0 {
			n := uint64(len(p))
			if n > s.remaining {
				n = s.remaining
			}
			s.remaining -= n
			p = p[n:]
			continue
		}
		s.header[s.headerLen] = p[0]
		s.headerLen++
		p = p[1:]
		if s.headerLen < frameHeaderLen(s.header[:s.headerLen]) {
			continue
		}
		s.frame()
	}
}

// frameHeaderLen is the length of the frame header that h starts, as far
// as h tells (2 until the second byte is known).
func frameHeaderLen(h []byte) int {
	if len(h) < 2 {
		return 2
	}
	n := 2
	switch h[1] &^ maskBit {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&maskBit != 0 {
		n += 4
	}
	return n
}

// frame takes in a complete frame header.
func (s *frameScanner) frame() {
	h := s.header[:s.headerLen]
	s.headerLen = 0
	op := h[0] & opcodeBits
	switch length := uint64(h[1] &^ maskBit); length {
	case 126:
		s.remaining = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		s.remaining = binary.BigEndian.Uint64(h[2:10])
	default:
		s.remaining = length
	}
	if op == opClose {
		s.closed = true
	}
	if op < opClose {
		// A data frame or a continuation: the message ends with FIN.
		s.fragmented = h[0]&finBit == 0
	}
}

// betweenMessages reports whether the next byte would start a message: no
// frame is under way and no message is awaiting its last frame.
func (s *frameScanner) betweenMessages() bool {
	return s.headerLen == 0 && s.remaining == 0 && !s.fragmented
}

// serverFrame returns an unmasked frame, as a server sends one.
func serverFrame(op byte, payload []byte) []byte {
	b := make([]byte, 0, len(payload)+10)
	b = append(b, finBit|op)
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// closeFrame returns a server's close frame with a code and reason text.
func closeFrame(code int, reason string) []byte {
	payload := binary.BigEndian.AppendUint16(nil, uint16(code))
	return serverFrame(opClose, append(payload, reason...))
}
