// Command kubeoc manages KubeOpenCode Agents and their share links.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/kubeopencode/share/pkg/cli"
)

func main() {
	if err := cli.NewDefaultCommand().Execute(); err != nil {
		if !errors.Is(err, cli.ErrExit) {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
		}
		os.Exit(1)
	}
}
