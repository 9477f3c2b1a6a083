package wire

import "fmt"

// parseSize parses the payload of a resize: a JSON object with exactly the
// members "cols" and "rows", each an integer in 1..MaxDimension, in either
// order, with JSON whitespace anywhere between tokens. It is stricter than
// JSON: member names are matched exactly (no escapes, no other case), a
// repeated member is an error, and numbers have no sign, fraction or
// exponent. It does not allocate for valid input.
func parseSize(b []byte) (Size, error) {
	if len(b) > MaxResizePayload {
		return Size{}, fmt.Errorf("%w: resize of %d bytes, at most %d", ErrInvalid, len(b), MaxResizePayload)
	}
	p := sizeParser{b: b}
	var cols, rows int
	p.skipSpace()
	if !p.consume('{') {
		return Size{}, p.fail("'{'")
	}
	for i := 0; i < 2; i++ {
		if i > 0 && !p.skipSpace().consume(',') {
			return Size{}, p.fail("','")
		}
		var dst *int
		switch {
		case p.skipSpace().consumeString(`"cols"`):
			dst = &cols
		case p.consumeString(`"rows"`):
			dst = &rows
		default:
			return Size{}, p.fail(`"cols" or "rows"`)
		}
		if *dst != 0 {
			return Size{}, fmt.Errorf("%w: resize: repeated member at offset %d", ErrInvalid, p.i)
		}
		if !p.skipSpace().consume(':') {
			return Size{}, p.fail("':'")
		}
		n, ok := p.skipSpace().dimension()
		if !ok {
			return Size{}, fmt.Errorf("%w: resize: want an integer in 1..%d at offset %d", ErrInvalid, MaxDimension, p.i)
		}
		*dst = n
	}
	if !p.skipSpace().consume('}') {
		return Size{}, p.fail("'}'")
	}
	if p.skipSpace(); p.i != len(b) {
		return Size{}, fmt.Errorf("%w: resize: trailing data at offset %d", ErrInvalid, p.i)
	}
	return Size{Cols: uint16(cols), Rows: uint16(rows)}, nil
}

type sizeParser struct {
	b []byte
	i int
}

func (p *sizeParser) skipSpace() *sizeParser {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return p
		}
	}
	return p
}

func (p *sizeParser) consume(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *sizeParser) consumeString(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

// dimension reads an integer in 1..MaxDimension: digits only, no leading
// zero.
func (p *sizeParser) dimension() (int, bool) {
	start, n := p.i, 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		if p.i-start == 4 {
			return 0, false
		}
		n = n*10 + int(p.b[p.i]-'0')
		p.i++
	}
	if p.i == start || p.b[start] == '0' || n > MaxDimension {
		return 0, false
	}
	// A fraction or an exponent makes the number something else.
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return 0, false
	}
	return n, true
}

func (p *sizeParser) fail(want string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("%w: resize: want %s, got the end", ErrInvalid, want)
	}
	return fmt.Errorf("%w: resize: want %s at offset %d", ErrInvalid, want, p.i)
}
