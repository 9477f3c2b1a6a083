package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Opcodes: the first byte of every message.
const (
	// OpData carries raw terminal bytes: keystrokes and pastes from the
	// page, terminal output to it.
	OpData byte = 0x00
	// OpResize carries the page's terminal size as the JSON object
	// {"cols":N,"rows":N}. The page's first message must be one.
	OpResize byte = 0x01
	// OpStatus carries, from the server, why the session ends, as a JSON
	// Status. The server closes the connection right after it.
	OpStatus byte = 0x02
	// OpAck carries, from the page, the number of output bytes it has
	// rendered since its previous ack, as a 4-byte big-endian unsigned
	// integer.
	OpAck byte = 0x03
	// OpPresence carries, from the server, how many pages share the
	// session, as JSON {"viewers":N}. It is sent when one joins or leaves.
	OpPresence byte = 0x04
	// OpSync tells the page, before any output of a session, where that
	// output starts: JSON {"session":ID,"offset":N} means the next data byte
	// is byte N of the output of session ID. A page that lost its connection
	// asks to resume from the offset it has reached.
	OpSync byte = 0x05
)

// Limits of the protocol.
const (
	// MaxClientMessage bounds a whole message from the page, opcode
	// included.
	MaxClientMessage = 64 << 10
	// MaxServerMessage bounds a whole message from the server, opcode
	// included. Servers send output in data messages of at most
	// MaxServerMessage-1 bytes.
	MaxServerMessage = 64 << 10
	// MaxResizePayload bounds the JSON of a resize.
	MaxResizePayload = 256
	// MaxStatusPayload bounds the JSON of a status.
	MaxStatusPayload = 4 << 10
	// MaxStatusMessage bounds the Message of a status; EncodeStatus
	// shortens a longer one.
	MaxStatusMessage = 1 << 10
	// MaxDimension bounds the columns and the rows of a terminal. The least
	// of each is 1.
	MaxDimension = 1000
)

// WebSocket close codes (RFC 6455, section 7.4.1) the server closes with.
const (
	// CloseNormal ends a session that ended by itself: the command exited,
	// the exec stream closed, the idle timeout passed.
	CloseNormal = 1000
	// CloseGoingAway ends a session because the server is stopping.
	CloseGoingAway = 1001
	// ClosePolicy ends a session that may not go on: the link was revoked
	// or expired, the client's address or the Agent no longer qualifies, or
	// the page broke this protocol.
	ClosePolicy = 1008
	// CloseServerError ends a session on a failure of the server or the
	// exec stream, or because the pod went away.
	CloseServerError = 1011
)

// Status reasons: the Reason of a Status, a word the page maps to what it
// tells the person. Pages treat an unknown reason as ReasonError.
const (
	// ReasonExited: the command ended; ExitCode says how.
	ReasonExited = "Exited"
	// ReasonClosed: the exec stream ended without an exit code, or the
	// server ended the session.
	ReasonClosed = "Closed"
	// ReasonIdle: nothing was typed or printed for the idle timeout.
	ReasonIdle = "Idle"
	// ReasonRevoked: the share was disabled or its token rotated.
	ReasonRevoked = "Revoked"
	// ReasonModeChanged: the link was switched between edit and view; the
	// page reconnects to go on in the new mode.
	ReasonModeChanged = "ModeChanged"
	// ReasonExpired: the share's expiresAt passed.
	ReasonExpired = "Expired"
	// ReasonIPNotAllowed: the client's address is no longer allowed.
	ReasonIPNotAllowed = "IPNotAllowed"
	// ReasonForbidden: the session is refused for another policy reason.
	ReasonForbidden = "Forbidden"
	// ReasonAgentNotReady: the Agent stopped being ready.
	ReasonAgentNotReady = "AgentNotReady"
	// ReasonPodGone: the pod the session ran in went away.
	ReasonPodGone = "PodGone"
	// ReasonUnavailable: the share server could not reach the Kubernetes
	// API server to start or keep the exec stream.
	ReasonUnavailable = "Unavailable"
	// ReasonServerShutdown: the share server is stopping.
	ReasonServerShutdown = "ServerShutdown"
	// ReasonProtocolError: the page broke this protocol.
	ReasonProtocolError = "ProtocolError"
	// ReasonError: the exec stream or the server failed.
	ReasonError = "Error"
)

// ErrInvalid is wrapped by every decoding error, so that callers can tell a
// malformed message from a transport failure with errors.Is.
var ErrInvalid = errors.New("invalid message")

// Decoding errors that callers may want to tell apart. All wrap ErrInvalid.
var (
	// ErrEmpty is the error for a message without an opcode.
	ErrEmpty = fmt.Errorf("%w: empty", ErrInvalid)
	// ErrTooLarge is the error for a message past its size limit.
	ErrTooLarge = fmt.Errorf("%w: too large", ErrInvalid)
	// ErrUnknownOpcode is the error for an opcode the receiver does not
	// accept from its peer.
	ErrUnknownOpcode = fmt.Errorf("%w: unknown opcode", ErrInvalid)
)

// Size is a terminal size in character cells.
type Size struct {
	// Cols is the number of columns, 1..MaxDimension.
	Cols uint16 `json:"cols"`
	// Rows is the number of rows, 1..MaxDimension.
	Rows uint16 `json:"rows"`
}

// Valid reports whether both dimensions are in 1..MaxDimension.
func (s Size) Valid() bool {
	return s.Cols >= 1 && s.Cols <= MaxDimension && s.Rows >= 1 && s.Rows <= MaxDimension
}

// Status tells the page why its session ends.
type Status struct {
	// Reason is a machine-readable word, one of the Reason constants.
	Reason string `json:"reason"`
	// Message is a sentence for the person at the page.
	Message string `json:"message,omitempty"`
	// ExitCode is the exit code of the command, for ReasonExited.
	ExitCode *int `json:"exitCode,omitempty"`
}

// Message is one decoded message. Op tells which of the other fields is
// set.
type Message struct {
	// Op is the opcode.
	Op byte
	// Data is the payload of an OpData message. It aliases the decoded
	// buffer.
	Data []byte
	// Size is the payload of an OpResize message.
	Size Size
	// Ack is the payload of an OpAck message.
	Ack uint32
	// Status is the payload of an OpStatus message.
	Status *Status
	// Presence is the payload of an OpPresence message.
	Presence *Presence
	// Sync is the payload of an OpSync message.
	Sync *Sync
}

// DecodeClient decodes a message from the page, strictly: anything not
// exactly as specified is an error wrapping ErrInvalid, and ends the
// session. It does not allocate for valid messages.
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
		size, err := parseSize(payload)
		if err != nil {
			return Message{}, err
		}
		m.Size = size
	case OpAck:
		if len(payload) != 4 {
			return Message{}, fmt.Errorf("%w: ack of %d bytes, want 4", ErrInvalid, len(payload))
		}
		m.Ack = binary.BigEndian.Uint32(payload)
	default:
		return Message{}, fmt.Errorf("%w 0x%02x from the page", ErrUnknownOpcode, m.Op)
	}
	return m, nil
}

// DecodeServer decodes a message from the server, as a Go client of the
// protocol (and the tests) read them. Unknown fields of a status are
// ignored, so that servers can add fields; a status without a reason is an
// error.
func DecodeServer(b []byte) (Message, error) {
	if len(b) == 0 {
		return Message{}, ErrEmpty
	}
	if len(b) > MaxServerMessage {
		return Message{}, ErrTooLarge
	}
	m := Message{Op: b[0]}
	payload := b[1:]
	switch m.Op {
	case OpData:
		m.Data = payload
	case OpStatus:
		if len(payload) > MaxStatusPayload {
			return Message{}, fmt.Errorf("%w: status of %d bytes", ErrTooLarge, len(payload))
		}
		st := &Status{}
		if err := json.Unmarshal(payload, st); err != nil {
			return Message{}, fmt.Errorf("%w: status: %v", ErrInvalid, err)
		}
		if st.Reason == "" {
			return Message{}, fmt.Errorf("%w: status without a reason", ErrInvalid)
		}
		m.Status = st
	case OpPresence:
		if len(payload) > MaxStatusPayload {
			return Message{}, fmt.Errorf("%w: presence of %d bytes", ErrTooLarge, len(payload))
		}
		p := &Presence{}
		if err := json.Unmarshal(payload, p); err != nil || p.Viewers < 0 {
			return Message{}, fmt.Errorf("%w: presence: %v", ErrInvalid, err)
		}
		m.Presence = p
	case OpSync:
		if len(payload) > MaxStatusPayload {
			return Message{}, fmt.Errorf("%w: sync of %d bytes", ErrTooLarge, len(payload))
		}
		sy := &Sync{}
		if err := json.Unmarshal(payload, sy); err != nil || sy.Session == "" || sy.Offset < 0 {
			return Message{}, fmt.Errorf("%w: sync: %v", ErrInvalid, err)
		}
		m.Sync = sy
	default:
		return Message{}, fmt.Errorf("%w 0x%02x from the server", ErrUnknownOpcode, m.Op)
	}
	return m, nil
}

// AppendData appends an OpData message carrying p to dst and returns the
// extended buffer.
func AppendData(dst, p []byte) []byte {
	dst = append(dst, OpData)
	return append(dst, p...)
}

// EncodeData returns an OpData message carrying p.
func EncodeData(p []byte) []byte {
	return AppendData(make([]byte, 0, 1+len(p)), p)
}

// AppendResize appends an OpResize message to dst and returns the extended
// buffer.
func AppendResize(dst []byte, s Size) []byte {
	dst = append(dst, OpResize)
	dst = append(dst, `{"cols":`...)
	dst = strconv.AppendUint(dst, uint64(s.Cols), 10)
	dst = append(dst, `,"rows":`...)
	dst = strconv.AppendUint(dst, uint64(s.Rows), 10)
	return append(dst, '}')
}

// EncodeResize returns an OpResize message.
func EncodeResize(s Size) []byte {
	return AppendResize(make([]byte, 0, 32), s)
}

// AppendAck appends an OpAck message to dst and returns the extended buffer.
func AppendAck(dst []byte, n uint32) []byte {
	dst = append(dst, OpAck)
	return binary.BigEndian.AppendUint32(dst, n)
}

// EncodeAck returns an OpAck message.
func EncodeAck(n uint32) []byte {
	return AppendAck(make([]byte, 0, 5), n)
}

// EncodeStatus returns an OpStatus message. A Message longer than
// MaxStatusMessage bytes is cut at a character boundary and ends in "…";
// a Reason is required by the protocol and is not checked here.
func EncodeStatus(s Status) []byte {
	if len(s.Message) > MaxStatusMessage {
		cut := MaxStatusMessage - len("…")
		for cut > 0 && !utf8.RuneStart(s.Message[cut]) {
			cut--
		}
		s.Message = s.Message[:cut] + "…"
	}
	j, err := json.Marshal(s)
	if err != nil {
		// A struct of strings and an int always marshals.
		panic(err)
	}
	return append([]byte{OpStatus}, j...)
}

// Presence is the payload of an OpPresence message.
type Presence struct {
	Viewers int `json:"viewers"`
}

// EncodePresence returns an OpPresence message.
func EncodePresence(p Presence) []byte {
	j, _ := json.Marshal(p)
	return append([]byte{OpPresence}, j...)
}

// Sync is the payload of an OpSync message.
type Sync struct {
	// Session names the shared session; it is not a secret.
	Session string `json:"session"`
	// Offset is the position in the session's output of the next data byte.
	Offset int64 `json:"offset"`
}

// EncodeSync returns an OpSync message.
func EncodeSync(s Sync) []byte {
	j, _ := json.Marshal(s)
	return append([]byte{OpSync}, j...)
}
