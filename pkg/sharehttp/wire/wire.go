// Package wire is the protocol between the share page and the share
// listener: binary WebSocket messages whose first byte is an opcode. It is
// specified in docs/wire-protocol.md.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// Opcodes.
const (
	// OpData carries terminal bytes: typed input from the page, output to it.
	OpData byte = 0x00
	// OpResize carries the terminal size from the page, as JSON
	// {"cols":N,"rows":N}. The page's first message must be one.
	OpResize byte = 0x01
	// OpStatus carries, from the server, why the session is ending, as JSON;
	// the server closes the connection right after it.
	OpStatus byte = 0x02
	// OpAck carries, from the page, the number of output bytes it has
	// rendered since its last ack, as a 4-byte big-endian unsigned integer.
	OpAck byte = 0x03
)

const (
	// MaxClientMessage bounds a message from the page.
	MaxClientMessage = 64 << 10
	// MaxDimension bounds the columns and rows of a terminal.
	MaxDimension = 1000
	// maxControlJSON bounds the JSON of a resize.
	maxControlJSON = 256
)

// Errors of decoding.
var (
	ErrEmpty         = errors.New("empty message")
	ErrTooLarge      = fmt.Errorf("message larger than %d bytes", MaxClientMessage)
	ErrUnknownOpcode = errors.New("unknown opcode")
)

// Size is a terminal size.
type Size struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// Status tells the page why its session ends.
type Status struct {
	// Reason is a machine-readable word such as Exited, Revoked or Expired.
	Reason string `json:"reason"`
	// Message is a sentence for the person at the page.
	Message string `json:"message,omitempty"`
	// ExitCode is the exit code of the command, for Reason Exited.
	ExitCode *int `json:"exitCode,omitempty"`
}

// Message is one decoded message from the page.
type Message struct {
	Op byte
	// Data is the input of an OpData message. It aliases the decoded buffer.
	Data []byte
	// Size is the size of an OpResize message.
	Size Size
	// Ack is the byte count of an OpAck message.
	Ack uint32
}

// DecodeClient decodes a message from the page, strictly: anything not
// exactly as specified is an error, and the listener ends the session.
func DecodeClient(b []byte) (Message, error) {
	if len(b) == 0 {
		return Message{}, ErrEmpty
	}
	if len(b) > MaxClientMessage {
		return Message{}, ErrTooLarge
	}
	m := Message{Op: b[0]}
	payload := b[1:]
	switch m.Op {
	case OpData:
		m.Data = payload
	case OpResize:
		size, err := decodeSize(payload)
		if err != nil {
			return Message{}, err
		}
		m.Size = size
	case OpAck:
		if len(payload) != 4 {
			return Message{}, fmt.Errorf("ack of %d bytes, want 4", len(payload))
		}
		m.Ack = binary.BigEndian.Uint32(payload)
	default:
		return Message{}, fmt.Errorf("%w 0x%02x", ErrUnknownOpcode, m.Op)
	}
	return m, nil
}

func decodeSize(b []byte) (Size, error) {
	if len(b) > maxControlJSON {
		return Size{}, fmt.Errorf("resize of %d bytes is too large", len(b))
	}
	var raw struct {
		Cols *int `json:"cols"`
		Rows *int `json:"rows"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Size{}, fmt.Errorf("resize: %w", err)
	}
	if dec.More() {
		return Size{}, errors.New("resize: trailing data")
	}
	if raw.Cols == nil || raw.Rows == nil {
		return Size{}, errors.New("resize: cols and rows are required")
	}
	if *raw.Cols < 1 || *raw.Cols > MaxDimension || *raw.Rows < 1 || *raw.Rows > MaxDimension {
		return Size{}, fmt.Errorf("resize: %dx%d is outside 1..%d", *raw.Cols, *raw.Rows, MaxDimension)
	}
	return Size{Cols: uint16(*raw.Cols), Rows: uint16(*raw.Rows)}, nil
}

// EncodeData returns an OpData message carrying p.
func EncodeData(p []byte) []byte {
	b := make([]byte, 1+len(p))
	b[0] = OpData
	copy(b[1:], p)
	return b
}

// EncodeResize returns an OpResize message.
func EncodeResize(s Size) []byte {
	j, _ := json.Marshal(s)
	return append([]byte{OpResize}, j...)
}

// EncodeAck returns an OpAck message.
func EncodeAck(n uint32) []byte {
	b := []byte{OpAck, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], n)
	return b
}

// EncodeStatus returns an OpStatus message.
func EncodeStatus(s Status) []byte {
	j, _ := json.Marshal(s)
	return append([]byte{OpStatus}, j...)
}

// OpPresence carries, from the server, how many people are on the session,
// as JSON {"viewers":N}. It is sent when someone joins or leaves.
const OpPresence byte = 0x04

// Presence is the payload of an OpPresence message.
type Presence struct {
	Viewers int `json:"viewers"`
}

// EncodePresence returns an OpPresence message.
func EncodePresence(p Presence) []byte {
	j, _ := json.Marshal(p)
	return append([]byte{OpPresence}, j...)
}
