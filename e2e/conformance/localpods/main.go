// Command localpods plays kubelet (and scheduler) for one fake Node on this machine, so the
// Gateway API conformance suite's echo Deployments run without a container runtime.
//
// For every Pod of the cluster it binds the unscheduled ones to its Node, gives each a network
// namespace of its own (a veth pair, a 10.244.x.y address: EndpointSlices refuse loopback
// addresses, and the suite's echo server listens on fixed ports, so pods cannot share one
// network), starts the suite's own echo-basic binary in it with the container's environment
// (values, field references, and files of mounted Secrets and ConfigMaps at rewritten paths),
// and reports the Pod Running and Ready with its address. Deleted Pods are stopped and removed.
// Containers whose image is not echo-basic (the suite's CoreDNS for UDPRoute tests, which
// Tollgate does not claim) are reported Running with nothing started, and logged as such.
//
// It must run as root (network namespaces) and cleans up everything it made on SIGINT/SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// hostSide is the address every pod's veth peer has on the host side; pods route through it.
const hostSide = "10.244.0.1"

type pod struct {
	ip      string
	netns   string
	hostIf  string
	dir     string
	procs   []*exec.Cmd
	started bool
}

type kubelet struct {
	client  kubernetes.Interface
	node    string
	hostIP  string
	echo    string
	workDir string

	mu     sync.Mutex
	pods   map[types.UID]*pod
	nextIP int
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	node := flag.String("node", "tollgate-local", "name of the Node this process plays")
	echo := flag.String("echo-basic", "", "path of the echo-basic binary (required)")
	workDir := flag.String("work-dir", filepath.Join(os.TempDir(), "localpods"), "logs and mounted files of the pods")
	flag.Parse()
	if *echo == "" {
		log.Fatal("-echo-basic is required")
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig %s: %v", *kubeconfig, err)
	}
	config.QPS, config.Burst = 50, 100
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		log.Fatal(err)
	}
	k := &kubelet{
		client: client, node: *node, hostIP: outboundIP(), echo: *echo, workDir: *workDir,
		pods: map[types.UID]*pod{}, nextIP: 2,
	}
	if err := os.MkdirAll(k.workDir, 0o755); err != nil {
		log.Fatal(err)
	}
	removeStale()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := k.registerNode(ctx); err != nil {
		log.Fatalf("node %s: %v", k.node, err)
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	informer := factory.Core().V1().Pods().Informer()
	queue := make(chan *corev1.Pod, 1024)
	handler := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			queue <- p
		}
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handler,
		UpdateFunc: func(_, obj any) { handler(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				k.stop(p.UID)
			}
		},
	}); err != nil {
		log.Fatal(err)
	}
	factory.Start(ctx.Done())
	log.Printf("localpods: node %s, host %s, pods in 10.244.0.0/16", k.node, k.hostIP)
	for {
		select {
		case <-ctx.Done():
			k.stopAll()
			return
		case p := <-queue:
			if err := k.sync(ctx, p); err != nil {
				// As a kubelet does (a Secret not there yet, a conflict): try again shortly.
				log.Printf("pod %s/%s: %v (retrying)", p.Namespace, p.Name, err)
				go func() {
					time.Sleep(time.Second)
					if latest, ok, _ := informer.GetStore().Get(p); ok {
						queue <- latest.(*corev1.Pod)
					}
				}()
			}
		}
	}
}

// removeStale deletes network namespaces (and so their veths) an earlier run that was killed
// outright left behind: every `lp-N` is ours.
func removeStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, "lp-") {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// outboundIP is the machine's own non-loopback address (the Node's InternalIP and hostIP).
func outboundIP() string {
	conn, err := net.Dial("udp", "192.0.2.1:9")
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String()
}

func (k *kubelet) registerNode(ctx context.Context) error {
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.node, Labels: map[string]string{"kubernetes.io/hostname": k.node}},
	}
	created, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		created, err = k.client.CoreV1().Nodes().Get(ctx, k.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
	}
	created.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "localpods runs this node's pods as processes", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.hostIP}},
		Capacity: corev1.ResourceList{
			corev1.ResourcePods: resource.MustParse("500"),
		},
	}
	_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (k *kubelet) sync(ctx context.Context, p *corev1.Pod) error {
	if p.DeletionTimestamp != nil {
		k.stop(p.UID)
		if p.Spec.NodeName == k.node || p.Spec.NodeName == "" {
			// What a kubelet does once the containers are gone: the final delete.
			zero := int64(0)
			err := k.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
				GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &p.UID},
			})
			if err != nil && !strings.Contains(err.Error(), "not found") {
				return err
			}
		}
		return nil
	}
	if p.Spec.NodeName == "" {
		binding := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: k.node},
		}
		return k.client.CoreV1().Pods(p.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	}
	if p.Spec.NodeName != k.node {
		return nil
	}
	k.mu.Lock()
	state, known := k.pods[p.UID]
	k.mu.Unlock()
	if known && state.started && p.Status.PodIP == state.ip && p.Status.Phase == corev1.PodRunning {
		return nil
	}
	if !known {
		var err error
		if state, err = k.start(ctx, p); err != nil {
			return err
		}
	}
	return k.reportRunning(ctx, p, state)
}

func (k *kubelet) start(ctx context.Context, p *corev1.Pod) (*pod, error) {
	state, err := k.allocate(p)
	if err != nil {
		return nil, err
	}
	if err := k.run(ctx, p, state); err != nil {
		k.teardown(state)
		return nil, err
	}
	state.started = true
	k.mu.Lock()
	k.pods[p.UID] = state
	k.mu.Unlock()
	log.Printf("pod %s/%s: %s (%d processes)", p.Namespace, p.Name, state.ip, len(state.procs))
	return state, nil
}

// allocate gives the pod an address and a network namespace holding it.
func (k *kubelet) allocate(p *corev1.Pod) (*pod, error) {
	k.mu.Lock()
	n := k.nextIP
	k.nextIP++
	k.mu.Unlock()
	state := &pod{
		ip:     fmt.Sprintf("10.244.%d.%d", n/250, n%250+2),
		netns:  fmt.Sprintf("lp-%d", n),
		hostIf: fmt.Sprintf("lph%d", n),
		dir:    filepath.Join(k.workDir, p.Namespace, p.Name),
	}
	steps := [][]string{
		{"netns", "add", state.netns},
		{"link", "add", state.hostIf, "type", "veth", "peer", "name", "eth0", "netns", state.netns},
		{"addr", "add", hostSide + "/32", "dev", state.hostIf},
		{"link", "set", state.hostIf, "up"},
		{"route", "add", state.ip + "/32", "dev", state.hostIf},
		{"-n", state.netns, "addr", "add", state.ip + "/32", "dev", "eth0"},
		{"-n", state.netns, "link", "set", "eth0", "up"},
		{"-n", state.netns, "link", "set", "lo", "up"},
		{"-n", state.netns, "route", "add", hostSide + "/32", "dev", "eth0"},
		{"-n", state.netns, "route", "add", "default", "via", hostSide, "dev", "eth0"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			k.teardown(state)
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return state, nil
}

// run starts the pod's echo-basic containers in its network namespace.
func (k *kubelet) run(ctx context.Context, p *corev1.Pod, state *pod) error {
	if err := os.MkdirAll(state.dir, 0o755); err != nil {
		return err
	}
	for _, c := range p.Spec.Containers {
		if !strings.Contains(c.Image, "/echo-basic:") {
			log.Printf("pod %s/%s: container %s: image %s is not runnable here; reported running with nothing started",
				p.Namespace, p.Name, c.Name, c.Image)
			continue
		}
		env, err := k.environment(ctx, p, &c, state)
		if err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		logFile, err := os.Create(filepath.Join(state.dir, c.Name+".log"))
		if err != nil {
			return err
		}
		cmd := exec.Command("ip", append([]string{"netns", "exec", state.netns, k.echo}, c.Args...)...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		state.procs = append(state.procs, cmd)
	}
	return nil
}

// environment resolves a container's env the way the kubelet does for what the suite uses:
// values, fieldRefs, and paths under Secret/ConfigMap mounts rewritten to files written here.
func (k *kubelet) environment(ctx context.Context, p *corev1.Pod, c *corev1.Container, state *pod) ([]string, error) {
	mounts := map[string]string{} // mountPath → local dir
	for _, m := range c.VolumeMounts {
		for _, v := range p.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			dir := filepath.Join(state.dir, "volumes", v.Name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			files := map[string][]byte{}
			switch {
			case v.Secret != nil:
				s, err := k.client.CoreV1().Secrets(p.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
				files = s.Data
			case v.ConfigMap != nil:
				cm, err := k.client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("volume %s: %w", v.Name, err)
				}
				for key, val := range cm.Data {
					files[key] = []byte(val)
				}
			}
			// `items` maps keys to file names (the kubelet writes only those, under those paths).
			var items []corev1.KeyToPath
			switch {
			case v.Secret != nil:
				items = v.Secret.Items
			case v.ConfigMap != nil:
				items = v.ConfigMap.Items
			}
			if len(items) > 0 {
				picked := map[string][]byte{}
				for _, it := range items {
					data, ok := files[it.Key]
					if !ok {
						return nil, fmt.Errorf("volume %s: no key %s", v.Name, it.Key)
					}
					picked[it.Path] = data
				}
				files = picked
			}
			for name, data := range files {
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return nil, err
				}
				if err := os.WriteFile(path, data, 0o600); err != nil {
					return nil, err
				}
			}
			mounts[m.MountPath] = dir
		}
	}
	env := []string{"PATH=/usr/bin:/bin"}
	for _, e := range c.Env {
		value := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				value = p.Name
			case "metadata.namespace":
				value = p.Namespace
			case "status.podIP":
				value = state.ip
			case "spec.nodeName":
				value = k.node
			case "spec.serviceAccountName":
				value = p.Spec.ServiceAccountName
			default:
				return nil, fmt.Errorf("env %s: fieldRef %s is not supported here", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		for mountPath, dir := range mounts {
			if strings.HasPrefix(value, mountPath+"/") {
				value = dir + strings.TrimPrefix(value, mountPath)
			}
		}
		env = append(env, e.Name+"="+value)
	}
	return env, nil
}

func (k *kubelet) reportRunning(ctx context.Context, p *corev1.Pod, state *pod) error {
	now := metav1.Now()
	status := corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: k.hostIP, HostIPs: []corev1.HostIP{{IP: k.hostIP}},
		PodIP: state.ip, PodIPs: []corev1.PodIP{{IP: state.ip}},
		StartTime: &now,
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		status.Conditions = append(status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range p.Spec.Containers {
		started := true
		status.ContainerStatuses = append(status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	fresh, err := k.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	fresh.Status = status
	_, err = k.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, fresh, metav1.UpdateOptions{})
	return err
}

func (k *kubelet) stop(uid types.UID) {
	k.mu.Lock()
	state, ok := k.pods[uid]
	delete(k.pods, uid)
	k.mu.Unlock()
	if ok {
		k.teardown(state)
	}
}

func (k *kubelet) stopAll() {
	k.mu.Lock()
	uids := make([]types.UID, 0, len(k.pods))
	for uid := range k.pods {
		uids = append(uids, uid)
	}
	k.mu.Unlock()
	for _, uid := range uids {
		k.stop(uid)
	}
}

func (k *kubelet) teardown(state *pod) {
	for _, cmd := range state.procs {
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	// Deleting the namespace removes its veth end, and with it the host's.
	_ = exec.Command("ip", "netns", "del", state.netns).Run()
	_ = exec.Command("ip", "link", "del", state.hostIf).Run()
}
