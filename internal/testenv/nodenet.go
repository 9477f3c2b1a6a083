package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// The real node's network lives in documentation ranges (RFC 5737) that no
// machine of this kind routes anywhere: the node's address and the pods'
// bridge in one, the Services in another. Nothing in them may leave the
// machine, and a start refuses to run where either range is already in use.
const (
	// NodeAddress is the real node's InternalIP, the kube-apiserver's bind
	// address in a control plane with a real node, and the pods' gateway.
	NodeAddress = "198.51.100.1"
	// PodCIDR holds the real node's pods.
	PodCIDR = "198.51.100.0/24"
	// ServiceCIDR holds the ClusterIPs of a control plane with a real node.
	ServiceCIDR = "203.0.113.0/24"
	// kubernetesServiceIP is the first address of ServiceCIDR, the
	// kubernetes Service's ClusterIP, which the kube-apiserver's serving
	// certificate must name.
	kubernetesServiceIP = "203.0.113.1"

	// nodeBridge holds NodeAddress and connects the pods' veths. It
	// stands in for a dummy interface too, since containers that run these
	// tests may lack the dummy link type; a bridge without ports serves
	// local addresses just the same.
	nodeBridge = "kocbr0"
	// egressChain counts, in the mangle table's POSTROUTING, every packet
	// from or to the node's ranges that leaves through the machine's
	// external interface: none may.
	egressChain = "KUBEOPENCODE-EGRESS"
	// nodeStateDir and nodeRunDir hold the real node's state: fixed paths,
	// so that a start finds and removes what a killed run left behind.
	nodeStateDir = "/var/lib/kubeopencode-node"
	nodeRunDir   = "/run/kubeopencode-node"
	// nodeCgroup is the kubelet's cgroup root, under which every pod runs.
	nodeCgroup = "kubeopencode-node"
	// blackholeMetric puts the blackhole routes below the bridge's routes:
	// while the bridge is up traffic goes to it, and when it is gone nothing
	// of either range can take the default route.
	blackholeMetric = "4095"
)

// sysctls are the kernel settings the node's parts may change; their
// values from before the node are saved and restored.
var sysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
}

// run runs a command and returns its error with its output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CheckRealNodeHost says why this machine cannot run a real node, or nil:
// it needs root on Linux, iproute2, iptables, runc and the CNI plugins
// (.ci/run installs them).
func CheckRealNodeHost() error {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return errors.New("a real node needs root on Linux")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-save", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("a real node needs %s: %w", tool, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "bridge")); err != nil {
		return fmt.Errorf("a real node needs the CNI plugins (containernetworking-plugins): %w", err)
	}
	return nil
}

// setUpNodeNetwork makes the node's network after removing whatever an
// earlier run left: blackhole routes for both ranges first, then the
// bridge with NodeAddress and the route of the Services to it, then the
// egress counters. Until kube-proxy runs, a packet to a ClusterIP goes to
// the port-less bridge and nowhere else.
func setUpNodeNetwork() error {
	cleanUpNode()
	if err := checkRangesFree(); err != nil {
		return err
	}
	for _, dir := range []string{nodeStateDir, nodeRunDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if err := saveSysctls(); err != nil {
		return err
	}
	if err := saveNewHostPaths(); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "route", "add", "blackhole", PodCIDR, "metric", blackholeMetric},
		{"ip", "route", "add", "blackhole", ServiceCIDR, "metric", blackholeMetric},
		{"ip", "link", "add", nodeBridge, "type", "bridge"},
		{"ip", "addr", "add", NodeAddress + "/24", "dev", nodeBridge},
		{"ip", "link", "set", nodeBridge, "up"},
		{"ip", "route", "add", ServiceCIDR, "dev", nodeBridge, "src", NodeAddress},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return addEgressCounters()
}

// checkRangesFree fails when an address or route of the machine, other
// than a blackhole left by an earlier run, is in either range: the node
// would take traffic meant for something else.
func checkRangesFree() error {
	_, pods, _ := net.ParseCIDR(PodCIDR)
	_, services, _ := net.ParseCIDR(ServiceCIDR)
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] != "inet" {
				continue
			}
			ip, _, err := net.ParseCIDR(f[i+1])
			if err == nil && (pods.Contains(ip) || services.Contains(ip)) {
				return fmt.Errorf("this machine has the address %s (%s), in the real node's ranges %s and %s", f[i+1], f[1], PodCIDR, ServiceCIDR)
			}
		}
	}
	return nil
}

// addEgressCounters counts, in mangle POSTROUTING, packets from or to the
// node's ranges leaving through the interface of the default route. Without
// a default route nothing can leave, and the chain counts nothing.
func addEgressCounters() error {
	if err := run("iptables", "-w", "-t", "mangle", "-N", egressChain); err != nil {
		return err
	}
	if iface := defaultRouteInterface(); iface != "" {
		for _, r := range [][]string{{"-s", PodCIDR}, {"-d", PodCIDR}, {"-s", ServiceCIDR}, {"-d", ServiceCIDR}} {
			if err := run("iptables", "-w", "-t", "mangle", "-A", egressChain, "-o", iface, r[0], r[1]); err != nil {
				return err
			}
		}
	}
	return run("iptables", "-w", "-t", "mangle", "-I", "POSTROUTING", "-j", egressChain)
}

// defaultRouteInterface is the interface of the IPv4 default route, or ""
// if there is none.
func defaultRouteInterface() string {
	out, err := exec.Command("ip", "-4", "route", "show", "default").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	return ""
}

// EgressPackets returns how many packets from or to the node's ranges have
// left the machine through its external interface since the node started.
func EgressPackets() (int, error) {
	out, err := exec.Command("iptables", "-w", "-t", "mangle", "-L", egressChain, "-n", "-v", "-x").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w: %s", egressChain, err, out)
	}
	total := 0
	for _, l := range strings.Split(string(out), "\n")[2:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			return 0, fmt.Errorf("reading %s: line %q", egressChain, l)
		}
		total += n
	}
	return total, nil
}

// saveSysctls records the values of sysctls, unless an earlier run that
// did not clean up recorded them already: those are the machine's own.
func saveSysctls() error {
	path := filepath.Join(nodeStateDir, "sysctls")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	var b strings.Builder
	for _, s := range sysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err != nil {
			continue // absent on this kernel
		}
		fmt.Fprintf(&b, "%s=%s\n", s, strings.TrimSpace(string(v)))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func restoreSysctls() {
	b, err := os.ReadFile(filepath.Join(nodeStateDir, "sysctls"))
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		if s, v, ok := strings.Cut(l, "="); ok {
			if err := os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644); err != nil {
				klog.ErrorS(err, "Restoring a sysctl", "sysctl", s)
			}
		}
	}
}

// cleanUpNode removes everything a real node makes, whether it stopped or
// was killed: the pods' processes (by the kubelet's cgroup) and the
// containerd shims (by their socket), the mounts under the node's folders,
// kube-proxy's and the egress counters' iptables chains, the bridge and
// routes, the sysctls' changes, and the folders. It does what it can and
// logs the rest.
func cleanUpNode() {
	killNodeProcesses()
	unmountUnder(nodeStateDir, nodeRunDir)
	removeCgroups()
	// kube-proxy --cleanup would need the binary; its chains all start
	// with KUBE- and live in the nat, filter and mangle tables.
	removeIptablesChains()
	_ = run("ip", "link", "del", nodeBridge)
	for _, cidr := range []string{PodCIDR, ServiceCIDR} {
		for run("ip", "route", "del", cidr) == nil {
		}
		for run("ip", "route", "del", "blackhole", cidr) == nil {
		}
	}
	restoreSysctls()
	removeHostPaths()
	for _, dir := range []string{nodeStateDir, nodeRunDir} {
		if err := os.RemoveAll(dir); err != nil {
			klog.ErrorS(err, "Removing the real node's folder", "dir", dir)
		}
	}
}

// killNodeProcesses kills the pods' processes and the containerd shims,
// which outlive containerd by design.
func killNodeProcesses() {
	for range 10 {
		pids := nodeProcesses()
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	klog.InfoS("Processes of the real node survive SIGKILL", "pids", nodeProcesses())
}

// nodeProcesses lists the processes in the kubelet's cgroup root and those
// started with the node's run folder on their command line (the shims).
func nodeProcesses() []int {
	return processesWhere(func(cgroup, cmdline string) bool {
		return strings.Contains(cgroup, "/"+nodeCgroup) || strings.Contains(cmdline, nodeRunDir)
	})
}

// processesWhere lists the live processes, other than this one, whose
// /proc/<pid>/cgroup and command line match; a zombie has ended already.
func processesWhere(match func(cgroup, cmdline string) bool) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == self {
			continue
		}
		cgroup, _ := os.ReadFile(filepath.Join(p, "cgroup"))
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		if !match(string(cgroup), string(cmdline)) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join(p, "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// unmountUnder unmounts every mount point under the folders, deepest
// first.
func unmountUnder(dirs ...string) {
	points := mountPointsUnder(dirs...)
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			klog.ErrorS(err, "Unmounting", "path", points[i])
		}
	}
}

// mountPointsUnder lists the mount points under the folders (or at them),
// in the order they were mounted.
func mountPointsUnder(dirs ...string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		for _, d := range dirs {
			if mp == d || strings.HasPrefix(mp, d+"/") {
				points = append(points, mp)
			}
		}
	}
	return points
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the kubelet's cgroup root in every hierarchy,
// children first.
func removeCgroups() {
	for _, root := range nodeCgroupRoots() {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				klog.ErrorS(err, "Removing a cgroup of the real node", "path", dirs[i])
			}
		}
	}
}

// nodeCgroupRoots lists the kubelet's cgroup root in every hierarchy
// where it exists (cgroup v1's and v2's).
func nodeCgroupRoots() []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + nodeCgroup)
	if fi, err := os.Stat("/sys/fs/cgroup/" + nodeCgroup); err == nil && fi.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+nodeCgroup)
	}
	return roots
}

// removeIptablesChains removes the egress counters and the chains of
// kube-proxy and the kubelet (KUBE-*) and of the CNI plugins (CNI-*), with
// the rules that jump to them, in IPv4 and IPv6.
func removeIptablesChains() {
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			removeChains(bin, table)
		}
	}
}

func removeChains(bin, table string) {
	out, err := exec.Command(bin+"-save", "-t", table).Output()
	if err != nil {
		return
	}
	var chains []string
	var jumps [][]string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, ":") {
			if chain := strings.Fields(l[1:])[0]; ours(chain) {
				chains = append(chains, chain)
			}
			continue
		}
		if f := splitRule(l); len(f) > 2 && f[0] == "-A" && !ours(f[1]) && jumpsToOurs(f) {
			jumps = append(jumps, f)
		}
	}
	for _, j := range jumps {
		if err := run(bin, append([]string{"-w", "-t", table, "-D"}, j[1:]...)...); err != nil {
			klog.ErrorS(err, "Removing an iptables rule of the real node")
		}
	}
	for _, c := range chains {
		_ = run(bin, "-w", "-t", table, "-F", c)
	}
	for _, c := range chains {
		if err := run(bin, "-w", "-t", table, "-X", c); err != nil {
			klog.ErrorS(err, "Removing an iptables chain of the real node")
		}
	}
}

// splitRule splits a rule of iptables-save into its words, a quoted
// comment being one word.
func splitRule(l string) []string {
	var words []string
	var w strings.Builder
	quoted, inWord := false, false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '\\' && quoted && i+1 < len(l):
			i++
			w.WriteByte(l[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func ours(chain string) bool {
	return chain == egressChain || strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")
}

func jumpsToOurs(rule []string) bool {
	for i := 0; i+1 < len(rule); i++ {
		if (rule[i] == "-j" || rule[i] == "-g") && ours(rule[i+1]) {
			return true
		}
	}
	return false
}

// hostPaths are folders outside the node's own that its parts write to
// whatever they are told: containerd's shim sockets, the pods' network
// namespaces, the kubelet's container log links and device-plugin folder,
// the CNI result cache. Those that did not exist before the node are
// removed with it.
var hostPaths = []string{"/run/containerd", "/run/netns", "/var/log/pods", "/var/log/containers", "/var/lib/kubelet", "/var/lib/cni"}

const newHostPathsFile = "new-host-paths"

// saveNewHostPaths records which of hostPaths do not exist yet, unless an
// earlier run that did not clean up recorded them already.
func saveNewHostPaths() error {
	path := filepath.Join(nodeStateDir, newHostPathsFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	var missing []string
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			missing = append(missing, p)
		}
	}
	return os.WriteFile(path, []byte(strings.Join(missing, "\n")), 0o600)
}

// removeHostPaths deletes the network namespaces holding an address of
// PodCIDR, with their veths, and then the host paths the node made.
func removeHostPaths() {
	for _, ns := range podNetns() {
		if err := run("ip", "netns", "del", ns); err != nil {
			klog.ErrorS(err, "Removing a pod's network namespace")
		}
	}
	b, err := os.ReadFile(filepath.Join(nodeStateDir, newHostPathsFile))
	if err != nil {
		return
	}
	for _, p := range strings.Split(string(b), "\n") {
		if !slices.Contains(hostPaths, p) {
			continue
		}
		unmountUnder(p)
		if err := os.RemoveAll(p); err != nil {
			klog.ErrorS(err, "Removing a folder of the real node", "path", p)
		}
	}
}

// podNetns lists the named network namespaces (the CNI plugins' cni-*)
// that hold an address of PodCIDR: the real node's pods'.
func podNetns() []string {
	var names []string
	paths, _ := filepath.Glob("/run/netns/cni-*")
	for _, ns := range paths {
		out, _ := exec.Command("ip", "-n", filepath.Base(ns), "-4", "-o", "addr", "show").Output()
		if strings.Contains(string(out), " "+strings.TrimSuffix(NodeAddress, "1")) {
			names = append(names, filepath.Base(ns))
		}
	}
	return names
}

// RealNodeLeftovers waits until no real node runs on this machine (it
// takes the machine's real-node lock, as a start does) and lists what one
// left behind: an address or route in the node's ranges, the bridge, an
// iptables chain or rule of the node (KUBE-*, CNI-*, KUBEOPENCODE-EGRESS;
// IPv4 and IPv6), a mount under the node's folders, a pod's network
// namespace, a process of the node (containerd, its shims, the kubelet,
// kube-proxy, the pods'), its cgroup, its folders. Each entry says what it
// is; none means the machine is as clean as before a node. A machine that
// cannot run a real node (CheckRealNodeHost) has nothing to list.
func RealNodeLeftovers(ctx context.Context) ([]string, error) {
	if err := CheckRealNodeHost(); err != nil {
		return nil, nil
	}
	lock, err := acquireNodeLock(ctx)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	return nodeLeftovers(), nil
}

// nodeLeftovers is RealNodeLeftovers for a caller that holds the lock.
func nodeLeftovers() []string {
	var left []string
	if err := checkRangesFree(); err != nil {
		left = append(left, "address: "+err.Error())
	}
	_, pods, _ := net.ParseCIDR(PodCIDR)
	_, services, _ := net.ParseCIDR(ServiceCIDR)
	inRanges := func(word string) bool {
		ip := net.ParseIP(word)
		if ip == nil {
			ip, _, _ = net.ParseCIDR(word)
		}
		return ip != nil && (pods.Contains(ip) || services.Contains(ip))
	}
	routes, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	for _, l := range strings.Split(string(routes), "\n") {
		if slices.ContainsFunc(strings.Fields(l), inRanges) {
			left = append(left, "route: "+l)
		}
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, nodeBridge) {
			left = append(left, "link: "+l)
		}
	}
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			rules, err := exec.Command(bin, "-t", table).Output()
			if err != nil {
				continue // no IPv6 tables on this kernel
			}
			for _, l := range strings.Split(string(rules), "\n") {
				if strings.Contains(l, "KUBE-") || strings.Contains(l, egressChain) || strings.Contains(l, ":CNI-") || strings.Contains(l, " CNI-") {
					left = append(left, fmt.Sprintf("%s -t %s: %s", bin, table, l))
				}
			}
		}
	}
	for _, mp := range mountPointsUnder(nodeStateDir, nodeRunDir) {
		left = append(left, "mount: "+mp)
	}
	for _, ns := range podNetns() {
		left = append(left, "network namespace: "+ns)
	}
	// The node's own programs name its state folder on their command line
	// (containerd's and kube-proxy's configuration, the kubelet's root).
	for _, pid := range processesWhere(func(cgroup, cmdline string) bool {
		return strings.Contains(cgroup, "/"+nodeCgroup) || strings.Contains(cmdline, nodeRunDir) || strings.Contains(cmdline, nodeStateDir)
	}) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	for _, cg := range nodeCgroupRoots() {
		left = append(left, "cgroup: "+cg)
	}
	for _, dir := range []string{nodeStateDir, nodeRunDir} {
		if _, err := os.Lstat(dir); err == nil {
			left = append(left, "folder: "+dir)
		}
	}
	return left
}
