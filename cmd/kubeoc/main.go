// Command kubeoc manages KubeOpenCode Agents and their share links.
package main

import (
	"os"

	"k8s.io/component-base/cli"

	kubeoccli "github.com/kubeopencode/share/pkg/cli"
)

func main() {
	os.Exit(cli.Run(kubeoccli.NewDefaultCommand()))
}
