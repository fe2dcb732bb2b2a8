// Command kube links kube-apiserver, kube-controller-manager, kube-scheduler,
// kubelet and kubectl into one binary (the old "hyperkube" idea: the shared
// dependency graph is compiled and linked once instead of five times).
//
// It dispatches on the base name it was invoked as (symlinks named
// kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl)
// or, failing that, on its first argument: `kube apiserver --help`.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // for timeZone support in CronJob

	"github.com/spf13/cobra"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl: client auth plugins
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go prometheus plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var commands = map[string]func() *cobra.Command{
	"apiserver":          apiserver.NewAPIServerCommand,
	"controller-manager": controllermanager.NewControllerManagerCommand,
	"scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":            kubelet.NewKubeletCommand,
	"kubectl":            kubectlcmd.NewDefaultKubectlCommand,
}

func lookup(name string) (string, bool) {
	name = strings.TrimPrefix(name, "kube-")
	if _, ok := commands[name]; ok {
		return name, true
	}
	return "", false
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kube {apiserver|controller-manager|scheduler|kubelet|kubectl} [flags]")
	fmt.Fprintln(os.Stderr, "   or: invoke through a symlink named kube-apiserver, kube-controller-manager, kube-scheduler, kubelet or kubectl")
}

func main() {
	name, ok := lookup(filepath.Base(os.Args[0]))
	if !ok {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		if name, ok = lookup(os.Args[1]); !ok {
			if os.Args[1] == "version" || os.Args[1] == "--version" {
				// Delegate to the apiserver's --version which prints gitVersion.
				name, ok = "apiserver", true
				os.Args = []string{os.Args[0], "--version"}
			} else {
				fmt.Fprintf(os.Stderr, "kube: unknown command %q\n", os.Args[1])
				usage()
				os.Exit(2)
			}
		} else {
			os.Args = append([]string{os.Args[0]}, os.Args[2:]...)
		}
	}
	command := commands[name]()
	if name == "kubectl" {
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err)
		}
		return
	}
	os.Exit(cli.Run(command))
}
