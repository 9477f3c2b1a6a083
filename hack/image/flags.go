package main

import (
	"fmt"
	"strings"
)

// file is one -add: the file at src goes to dest in the image.
type file struct{ dest, src string }

type fileList []file

func (l *fileList) String() string { return fmt.Sprint(*l) }

func (l *fileList) Set(v string) error {
	dest, src, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(dest, "/") || src == "" {
		return fmt.Errorf("%q is not DEST=SRC with an absolute DEST", v)
	}
	*l = append(*l, file{dest: dest, src: src})
	return nil
}

type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}
