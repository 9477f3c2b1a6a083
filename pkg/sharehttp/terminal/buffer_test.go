package terminal

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestInputBufferWriteToHandsOverEverythingInOrder(t *testing.T) {
	b := NewInputBuffer(8)
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, b) // uses WriteTo
		done <- err
	}()
	want := strings.Repeat("0123456789", 100)
	// Writes larger than the buffer wait for WriteTo to take what it holds.
	for i := 0; i < len(want); i += 37 {
		if _, err := b.Write([]byte(want[i:min(i+37, len(want))])); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	if err := <-done; err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if got.String() != want {
		t.Fatalf("got %q, want %q", got.String(), want)
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("Write after Close: %v, want io.ErrClosedPipe", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

func TestInputBufferWriteToStopsAtTheWritersError(t *testing.T) {
	b := NewInputBuffer(8)
	if _, err := b.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteTo(failingWriter{}); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("WriteTo: %v, want the writer's error", err)
	}
}
