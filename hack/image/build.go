package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// defaultPath is the PATH that BuildKit gives an image built FROM scratch,
// so that this builder's images match the Dockerfile's.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type imageSpec struct {
	tag, output, busybox, user string
	files                      fileList
	entrypoint, cmd            stringList
}

// build writes the archive of spec.
func build(spec imageSpec) error {
	if spec.tag == "" || spec.output == "" {
		return errors.New("-tag and -o are required")
	}
	tag, err := name.NewTag(spec.tag)
	if err != nil {
		return err
	}
	files := append(fileList(nil), spec.files...)
	var links []string
	if spec.busybox != "" {
		files = append(files, file{dest: "/bin/busybox", src: spec.busybox})
		if links, err = busyboxApplets(spec.busybox); err != nil {
			return err
		}
	}
	contents, err := layerTar(files, links)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(contents)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env:        []string{defaultPath},
			User:       spec.user,
			Entrypoint: spec.entrypoint,
			Cmd:        spec.cmd,
		},
	})
	if err != nil {
		return err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return err
	}
	return tarball.WriteToFile(spec.output, tag, img)
}

// busyboxApplets lists the paths busybox installs links at, e.g. bin/sh.
func busyboxApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing the applets of %s: %w", busybox, err)
	}
	var applets []string
	for _, l := range strings.Fields(string(out)) {
		if l != "bin/busybox" {
			applets = append(applets, "/"+l)
		}
	}
	return applets, nil
}

// layerTar returns a layer holding files, owned by root with their own
// modes, and a symbolic link to /bin/busybox at each of links, with the
// folders they need; every time stamp is zero so that the same inputs make
// the same layer.
func layerTar(files fileList, links []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.dest)
	}
	paths = append(paths, links...)
	for _, p := range paths {
		for d := path.Dir(p); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	sortedDirs := make([]string, 0, len(dirs))
	for d := range dirs {
		sortedDirs = append(sortedDirs, d)
	}
	sort.Strings(sortedDirs)
	for _, d := range sortedDirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(f.src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.dest, "/"), Mode: int64(fi.Mode().Perm()), Size: int64(len(data)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	for _, l := range links {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(l, "/"), Linkname: "/bin/busybox", Mode: 0o777, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
