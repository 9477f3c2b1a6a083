// Command image builds the project's container images without a container
// engine: it writes an image archive (the format of `docker save`, which
// `docker load` and containerd's `ctr images import` read) holding one layer
// made of the given files and the given configuration.
//
// hack/build-images.sh (make image-archives) runs it for the servers' image
// (the Dockerfile's files, user and entrypoint), for the real test
// node's sandbox image and for an Agent image with a shell:
//
//	go run ./hack/image -tag kubeopencode/share:dev -o share.tar \
//	    -add /aggregated-apiserver=bin/aggregated-apiserver \
//	    -user 65532:65532 -entrypoint /aggregated-apiserver
//	go run ./hack/image -tag example/agent:1 -o agent.tar -busybox /usr/bin/busybox -cmd sh
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	var spec imageSpec
	flag.StringVar(&spec.tag, "tag", "", "the image's name and tag, e.g. kubeopencode/share:dev")
	flag.StringVar(&spec.output, "o", "", "the archive to write")
	flag.Var(&spec.files, "add", "DEST=SRC: put the file SRC at DEST in the image (repeatable)")
	flag.StringVar(&spec.busybox, "busybox", "", "a static busybox to put at /bin/busybox, with a link for each of its applets")
	flag.StringVar(&spec.user, "user", "", "the user (and group) the image runs as, e.g. 65532:65532")
	flag.Var(&spec.entrypoint, "entrypoint", "an entrypoint word (repeatable)")
	flag.Var(&spec.cmd, "cmd", "a command word (repeatable)")
	flag.Parse()
	if err := build(spec); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}
