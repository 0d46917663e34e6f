// k8s.test.mjs - the Kubernetes manifests of deploy/k8s/ hang together and fit
// the binary: every YAML document parses (the `yaml` package) and names its
// apiVersion, kind and metadata.name; the loraserve Deployment's probes hit
// /health on the container port the Service targets; its labels match the
// Service, PodDisruptionBudget and InferencePool selectors (and the endpoint
// picker's do not); every `--flag` and LORASERVE_* variable it uses is one that
// `loraserve serve --help` lists; the references between objects resolve
// (Secret, PVC, HPA target, pool, EPP Service, Gateway); and the pod is
// hardened (non-root, read-only root, no capabilities). Last, the binary is
// started with the Deployment's own args and env (paths mapped onto the test
// fixtures) and answers its probe, each InferenceModel's targets, and the
// vLLM metric names the endpoint picker is told to read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, mkdirSync }
  from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { BIN, SHARED, LORA_DIR, until } from './server.mjs';

const K8S = resolve('deploy/k8s');
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding',
  'PersistentVolume', 'StorageClass', 'GatewayClass']);

// Every document of every YAML file, with the file it came from.
function loadAll() {
  const files = readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f)).sort();
  const docs = [];
  for (const f of files) {
    const text = readFileSync(join(K8S, f), 'utf8');
    for (const d of parseAllDocuments(text)) {
      assert.deepEqual(d.errors.map(String), [], `${f}: YAML errors`);
      assert.deepEqual(d.warnings.map(String), [], `${f}: YAML warnings`);
      const obj = d.toJS();
      if (obj === null || obj === undefined) continue;   // an empty document (a trailing ---)
      docs.push({ file: f, obj });
    }
  }
  return { files, docs };
}

const { files, docs } = loadAll();
const objs = docs.map((d) => d.obj);
const ofKind = (kind) => objs.filter((o) => o.kind === kind);
const named = (kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const fileOf = (o) => docs.find((d) => d.obj === o).file;

// selector (a plain map) selects labels?
const selects = (selector, labels) =>
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels && labels[k] === v);

// The loraserve Deployment and its container: the one whose image is loraserve's.
const deployments = ofKind('Deployment');
const server = deployments.find((d) => d.spec.template.spec.containers
  .some((c) => /(^|\/)loraserve[:@]/.test(c.image)));
const container = server && server.spec.template.spec.containers
  .find((c) => /(^|\/)loraserve[:@]/.test(c.image));
const podLabels = server && server.spec.template.metadata.labels;
const envOf = (c) => Object.fromEntries((c.env || []).map((e) => [e.name, e]));

// The port a probe or a Service names (a number, or a container port's name).
function containerPort(c, port) {
  const p = c.ports.find((x) => x.containerPort === port || x.name === port);
  return p ? p.containerPort : undefined;
}

// A setting of the container: its --flag (in args, "--f=v" or "--f v") or, failing
// that, its LORASERVE_* variable.
function setting(c, flag, variable) {
  const args = [...(c.command || []), ...(c.args || [])];
  for (let i = 0; i < args.length; i++) {
    const a = String(args[i]);
    if (a.startsWith(`${flag}=`)) return a.slice(flag.length + 1);
    if (a === flag) return String(args[i + 1]);
  }
  const e = envOf(c)[variable];
  return e && e.value !== undefined ? String(e.value) : undefined;
}

function helpText() {
  // --help may exit 0 or 1 depending on the build; its text is what counts.
  try {
    return execFileSync(BIN, ['serve', '--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    return `${e.stdout || ''}${e.stderr || ''}`;
  }
}

test('every document parses and has apiVersion, kind and metadata.name', () => {
  assert.ok(files.length >= 5, `only ${files.length} YAML files in deploy/k8s`);
  assert.ok(docs.length >= 10, `only ${docs.length} documents`);
  const seen = new Set();
  for (const { file, obj } of docs) {
    assert.equal(typeof obj, 'object', `${file}: a document is not a mapping`);
    assert.match(String(obj.apiVersion || ''), /^[a-z0-9.-]*\/?v\d+((alpha|beta)\d+)?$/,
      `${file}: apiVersion of ${obj.kind}`);
    assert.match(String(obj.kind || ''), /^[A-Z][A-Za-z]+$/, `${file}: kind`);
    assert.ok(obj.metadata && typeof obj.metadata.name === 'string' && obj.metadata.name,
      `${file}: ${obj.kind} without metadata.name`);
    assert.match(obj.metadata.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/,
      `${file}: ${obj.kind} name ${obj.metadata.name}`);
    const key = `${obj.kind}/${obj.metadata.namespace || ''}/${obj.metadata.name}`;
    assert.ok(!seen.has(key), `${file}: ${key} defined twice`);
    seen.add(key);
  }
  // One namespace for everything namespaced, and it is created here.
  const namespaces = new Set(objs.filter((o) => !CLUSTER_SCOPED.has(o.kind))
    .map((o) => o.metadata.namespace));
  assert.equal(namespaces.size, 1, `namespaces used: ${[...namespaces]}`);
  const [ns] = namespaces;
  assert.ok(named('Namespace', ns), `Namespace ${ns} is not in the manifests`);
  // The kinds the issue asks for.
  for (const kind of ['Deployment', 'Service', 'HorizontalPodAutoscaler', 'PersistentVolumeClaim',
    'Secret', 'InferencePool', 'InferenceModel', 'HTTPRoute']) {
    assert.ok(ofKind(kind).length >= 1, `no ${kind}`);
  }
});

test('probes hit /health on the port the Service targets; selectors match the pods', () => {
  assert.ok(server, 'no Deployment runs the loraserve image');
  const spec = server.spec.template.spec;
  assert.ok(selects(server.spec.selector.matchLabels, podLabels),
    'the Deployment selector does not match its own pod template');

  const services = ofKind('Service').filter((s) => selects(s.spec.selector || {}, podLabels));
  assert.equal(services.length, 1, 'exactly one Service selects the loraserve pods');
  const svc = services[0];
  const ports = svc.spec.ports.map((p) => containerPort(container, p.targetPort ?? p.port));
  assert.ok(ports.every((p) => p !== undefined),
    `Service ${svc.metadata.name} targets a port the container does not have`);
  const port = ports[0];

  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const probe = container[kind];
    assert.ok(probe && probe.httpGet, `${kind}: missing or not an HTTP GET`);
    assert.equal(probe.httpGet.path, '/health', `${kind} path`);
    assert.equal(containerPort(container, probe.httpGet.port), port,
      `${kind} port ${probe.httpGet.port} is not the Service's target ${port}`);
  }
  // The server listens on that port on all interfaces.
  assert.equal(setting(container, '--port', 'LORASERVE_PORT'), String(port));
  assert.match(setting(container, '--host', 'LORASERVE_HOST') || '', /^(0\.0\.0\.0|::)$/,
    'the server must listen on all interfaces in a pod');
  // A liveness probe must not kill a draining server (/health is 503 then).
  const live = container.livenessProbe;
  const shutdown = Number(setting(container, '--shutdown-timeout', 'LORASERVE_SHUTDOWN_TIMEOUT') ?? 30);
  assert.ok((live.periodSeconds ?? 10) * (live.failureThreshold ?? 3) > shutdown,
    'liveness would restart the pod within its drain');

  // InferencePool and PodDisruptionBudget select these pods, on the same port.
  const pools = ofKind('InferencePool');
  for (const pool of pools) {
    assert.ok(selects(pool.spec.selector, podLabels),
      `InferencePool ${pool.metadata.name} does not select the loraserve pods`);
    assert.equal(pool.spec.targetPortNumber, port, 'InferencePool targetPortNumber');
  }
  for (const pdb of ofKind('PodDisruptionBudget')) {
    assert.ok(selects(pdb.spec.selector.matchLabels, podLabels), `PDB ${pdb.metadata.name}`);
  }
  // ... and no other pod (the endpoint picker) is caught by those selectors.
  for (const d of deployments.filter((x) => x !== server)) {
    const l = d.spec.template.metadata.labels;
    assert.ok(!selects(svc.spec.selector, l), `Service also selects ${d.metadata.name}`);
    for (const pool of pools) {
      assert.ok(!selects(pool.spec.selector, l), `pool also selects ${d.metadata.name}`);
    }
  }
  // A Service whose name upper-cased starts with LORASERVE would inject
  // LORASERVE_PORT=tcp://... through service links, which loraserve reads as --port.
  assert.equal(spec.enableServiceLinks, false, 'enableServiceLinks must be false');
});

test('every --flag and LORASERVE_* variable is one loraserve serve --help lists', () => {
  const help = helpText();
  assert.match(help, /--shutdown-timeout/, `unexpected --help output:\n${help}`);
  const flags = new Set(help.match(/--[a-z][a-z0-9-]*/g));
  const vars = new Set(help.match(/LORASERVE_[A-Z_]+/g));

  // The container's command line.
  const args = [...(container.command || []), ...(container.args || [])].map(String);
  assert.equal(args[0], 'serve', 'the first argument is the command word');
  for (const a of args.filter((x) => x.startsWith('-'))) {
    const f = a.split('=')[0];
    assert.ok(flags.has(f) || /^-[a-z]+$/.test(f) && help.includes(`${f},`),
      `${f} is not a loraserve serve flag`);
  }
  // Its environment (TMPDIR and other non-loraserve names aside).
  for (const name of Object.keys(envOf(container)).filter((n) => n.startsWith('LORASERVE_'))) {
    assert.ok(vars.has(name), `${name} is not a loraserve variable`);
  }
  // Any --flag written in the loraserve manifest, comments included.
  const text = readFileSync(join(K8S, fileOf(server)), 'utf8');
  for (const f of new Set(text.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) || [])) {
    assert.ok(flags.has(f), `${fileOf(server)} mentions ${f}, which loraserve serve does not have`);
  }
  // The other deploy files' LORASERVE_* settings too.
  for (const f of ['deploy/Dockerfile', 'deploy/loraserve.service']) {
    for (const v of new Set(readFileSync(f, 'utf8').match(/LORASERVE_[A-Z_]+/g) || [])) {
      assert.ok(vars.has(v), `${f}: ${v} is not a loraserve variable`);
    }
  }
});

test('the grace period outlasts the drain; the pods are hardened', () => {
  const spec = server.spec.template.spec;
  const shutdown = Number(setting(container, '--shutdown-timeout', 'LORASERVE_SHUTDOWN_TIMEOUT'));
  assert.ok(shutdown > 0, 'set the shutdown timeout explicitly');
  const drain = Number(setting(container, '--drain', 'LORASERVE_DRAIN') || 0);
  assert.ok(drain > 0, 'drain: the endpoints must drop the pod before its listener closes');
  const pre = container.lifecycle?.preStop?.exec?.command || [];
  const preSleep = pre[0] === 'sleep' ? Number(pre[1]) : 0;
  assert.ok(spec.terminationGracePeriodSeconds > shutdown + drain + preSleep,
    `terminationGracePeriodSeconds ${spec.terminationGracePeriodSeconds} <= ` +
    `${preSleep} s preStop + ${drain} s --drain + ${shutdown} s --shutdown-timeout`);

  for (const d of deployments) {
    const ps = d.spec.template.spec;
    for (const c of ps.containers) {
      const sc = { ...(ps.securityContext || {}), ...(c.securityContext || {}) };
      const what = `${d.metadata.name}/${c.name}`;
      assert.equal(sc.runAsNonRoot, true, `${what}: runAsNonRoot`);
      assert.ok(!sc.runAsUser || sc.runAsUser > 0, `${what}: runAsUser 0`);
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${what}: readOnlyRootFilesystem`);
      assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${what}: allowPrivilegeEscalation`);
      assert.ok(c.securityContext?.capabilities?.drop?.includes('ALL'), `${what}: capabilities.drop ALL`);
      assert.ok(!c.securityContext?.capabilities?.add?.length, `${what}: adds capabilities`);
      assert.equal(sc.seccompProfile?.type, 'RuntimeDefault', `${what}: seccompProfile`);
      for (const r of ['cpu', 'memory']) {
        assert.ok(c.resources?.requests?.[r] && c.resources?.limits?.[r], `${what}: ${r} request and limit`);
      }
    }
  }
  // The image's user (deploy/Dockerfile: useradd --uid 10001).
  const uid = /--uid (\d+)/.exec(readFileSync('deploy/Dockerfile', 'utf8'))[1];
  assert.equal(String(spec.securityContext.runAsUser), uid, 'runAsUser is not the image user');
});

test('the admin key, volumes, autoscaler and inference objects all resolve', () => {
  const spec = server.spec.template.spec;
  const env = envOf(container);
  // LORASERVE_ADMIN_KEY from a Secret that is here (the example, with its placeholder).
  const ref = env.LORASERVE_ADMIN_KEY?.valueFrom?.secretKeyRef;
  assert.ok(ref, 'LORASERVE_ADMIN_KEY must come from a Secret');
  const secret = named('Secret', ref.name);
  assert.ok(secret, `Secret ${ref.name} not found`);
  const value = secret.stringData?.[ref.key] ??
    (secret.data?.[ref.key] && Buffer.from(secret.data[ref.key], 'base64').toString());
  assert.ok(value, `Secret ${ref.name} has no ${ref.key}`);
  assert.match(value, /REPLACE|placeholder/i, 'the example Secret must hold an obvious placeholder');

  // Volumes: every PVC claimed exists; the model, adapters and data dir are mounted.
  const mounts = container.volumeMounts;
  const mountOf = (path) => mounts.filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  for (const v of spec.volumes.filter((x) => x.persistentVolumeClaim)) {
    assert.ok(named('PersistentVolumeClaim', v.persistentVolumeClaim.claimName),
      `PVC ${v.persistentVolumeClaim.claimName} not found`);
  }
  const volume = (m) => spec.volumes.find((v) => v.name === m.name);
  const model = setting(container, '--model', 'LORASERVE_MODEL');
  const adapterDir = setting(container, '--adapter-dir', 'LORASERVE_ADAPTER_DIR');
  const dataDir = setting(container, '--data-dir', 'LORASERVE_DATA_DIR');
  for (const [what, path] of [['model', model], ['adapter dir', adapterDir]]) {
    const m = mountOf(path);
    assert.ok(m && volume(m).persistentVolumeClaim, `${what} ${path} is not on the models PVC`);
    assert.equal(m.readOnly, true, `${what} volume should be mounted read-only`);
  }
  const dm = mountOf(dataDir);
  assert.ok(dm && !dm.readOnly && (volume(dm).emptyDir || volume(dm).persistentVolumeClaim),
    `--data-dir ${dataDir} is not on a writable volume`);
  const tmp = mountOf(env.TMPDIR?.value || '/tmp');
  assert.ok(tmp && !tmp.readOnly, 'no writable /tmp on a read-only root');

  // The autoscaler.
  const hpa = ofKind('HorizontalPodAutoscaler')[0];
  assert.equal(hpa.apiVersion, 'autoscaling/v2');
  assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
  assert.equal(hpa.spec.scaleTargetRef.name, server.metadata.name);
  assert.ok(hpa.spec.metrics.some((m) => m.type === 'Resource' && m.resource.name === 'cpu'),
    'the HPA scales on CPU');
  assert.ok(hpa.spec.minReplicas <= hpa.spec.maxReplicas);

  // The inference pool and its endpoint picker.
  const pool = ofKind('InferencePool')[0];
  assert.equal(pool.apiVersion, 'inference.networking.x-k8s.io/v1alpha2');
  const ext = pool.spec.extensionRef;
  const eppSvc = named('Service', ext.name);
  assert.ok(eppSvc, `extensionRef ${ext.name}: no such Service`);
  assert.ok(eppSvc.spec.ports.some((p) => p.port === (ext.portNumber ?? 9002)), 'EPP Service port');
  const epp = deployments.find((d) => selects(eppSvc.spec.selector, d.spec.template.metadata.labels));
  assert.ok(epp, 'no Deployment behind the EPP Service');
  const eppArgs = epp.spec.template.spec.containers[0].args.map(String);
  const arg = (name) => eppArgs[eppArgs.findIndex((a) => a.replace(/^--?/, '') === name) + 1];
  assert.equal(arg('poolName'), pool.metadata.name, 'EPP -poolName');
  assert.equal(arg('poolNamespace'), pool.metadata.namespace, 'EPP -poolNamespace');
  const sa = epp.spec.template.spec.serviceAccountName;
  assert.ok(named('ServiceAccount', sa), `EPP ServiceAccount ${sa}`);
  assert.ok(ofKind('RoleBinding').concat(ofKind('ClusterRoleBinding'))
    .some((b) => b.subjects.some((s) => s.name === sa)), 'the EPP ServiceAccount has no role');

  // InferenceModels: on the pool, unique names, weights on all targets or none,
  // and each target is the base model's id or an adapter file of the adapter dir.
  const modelId = basename(model).replace(/\.gguf$/, '');
  const modelNames = new Set();
  for (const im of ofKind('InferenceModel')) {
    const s = im.spec;
    assert.equal(im.apiVersion, 'inference.networking.x-k8s.io/v1alpha2');
    assert.equal(s.poolRef.name, pool.metadata.name, `${im.metadata.name}: poolRef`);
    assert.ok(!modelNames.has(s.modelName), `modelName ${s.modelName} twice`);
    modelNames.add(s.modelName);
    assert.ok([undefined, 'Critical', 'Standard', 'Sheddable'].includes(s.criticality));
    const targets = s.targetModels || [{ name: s.modelName }];
    const weighted = targets.filter((t) => t.weight !== undefined).length;
    assert.ok(weighted === 0 || weighted === targets.length, `${im.metadata.name}: weights`);
    for (const t of targets) {
      assert.ok(t.name === modelId || existsSync(join(LORA_DIR, `${t.name}.gguf`)),
        `${im.metadata.name}: target ${t.name} is neither ${modelId} nor an adapter file`);
    }
  }
  assert.ok(modelNames.has(modelId), 'no InferenceModel for the base model');

  // HTTPRoute -> Gateway and pool.
  for (const route of ofKind('HTTPRoute')) {
    for (const p of route.spec.parentRefs) assert.ok(named('Gateway', p.name), `Gateway ${p.name}`);
    const refs = route.spec.rules.flatMap((r) => r.backendRefs);
    assert.ok(refs.some((b) => b.kind === 'InferencePool' && b.name === pool.metadata.name),
      'the HTTPRoute does not send traffic to the pool');
    for (const b of refs.filter((x) => x.kind === 'InferencePool')) {
      assert.equal(b.group, 'inference.networking.x-k8s.io');
      assert.ok(named('InferencePool', b.name), `pool ${b.name}`);
    }
    for (const b of refs.filter((x) => (x.kind || 'Service') === 'Service')) {
      assert.ok(named('Service', b.name), `Service ${b.name}`);
    }
  }
});

test('the binary runs with the Deployment settings and serves what the pool routes', async () => {
  // /models on the PVC -> a temporary tree of links to the fixtures.
  const root = mkdtempSync(join(tmpdir(), 'loraserve-k8s-'));
  const env = envOf(container);
  const model = setting(container, '--model', 'LORASERVE_MODEL');
  const adapterDir = setting(container, '--adapter-dir', 'LORASERVE_ADAPTER_DIR');
  const models = join(root, 'models');
  mkdirSync(models);
  const local = (p) => p.replace(/(^|=)\/models(?=\/|$)/, `$1${models}`);
  symlinkSync(join(SHARED, 'models', basename(model)), local(model));
  symlinkSync(LORA_DIR, local(adapterDir));
  const secret = named('Secret', env.LORASERVE_ADMIN_KEY.valueFrom.secretKeyRef.name);
  const adminKey = secret.stringData[env.LORASERVE_ADMIN_KEY.valueFrom.secretKeyRef.key];

  const vars = {};
  for (const [k, e] of Object.entries(env)) {
    if (k.startsWith('LORASERVE_') && e.value !== undefined) vars[k] = local(String(e.value));
  }
  Object.assign(vars, {
    LORASERVE_ADMIN_KEY: adminKey, LORASERVE_HOST: '127.0.0.1', LORASERVE_PORT: '0',
    LORASERVE_DATA_DIR: join(root, 'data'), TMPDIR: root,
  });
  const args = [...(container.args || [])].map((a) => local(String(a)));
  const cleanEnv = Object.fromEntries(Object.entries(process.env)
    .filter(([k]) => !k.startsWith('LORASERVE_')));
  const proc = spawn(BIN, args, { env: { ...cleanEnv, ...vars }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  try {
    const port = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no start:\n${stderr}`)), 30000);
      proc.stderr.on('data', (d) => {
        stderr += d;
        const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr);
        if (m) { clearTimeout(timer); res(Number(m[1])); }
      });
      exited.then((c) => rej(new Error(`exited ${c}:\n${stderr}`)));
    });
    const url = `http://127.0.0.1:${port}`;
    const auth = { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/json' };
    // The probe, without a key.
    const h = await fetch(url + container.readinessProbe.httpGet.path);
    assert.equal(h.status, 200);
    // With the key from the Secret, the API is closed to others.
    assert.equal((await fetch(`${url}/v1/models`)).status, 401);
    // Every InferenceModel target answers (adapters load from --adapter-dir on first use).
    for (const im of ofKind('InferenceModel')) {
      for (const t of im.spec.targetModels || [{ name: im.spec.modelName }]) {
        const r = await fetch(`${url}/v1/completions`, {
          method: 'POST', headers: auth,
          body: JSON.stringify({ model: t.name, prompt: 'In the beginning', max_tokens: 4 }),
        });
        const text = await r.text();
        assert.equal(r.status, 200, `${im.metadata.name} -> ${t.name}: ${text}`);
      }
    }
    // The metric names the endpoint picker is told to read, without a key.
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const epp = deployments.find((d) => d !== server);
    const eppArgs = epp.spec.template.spec.containers[0].args.map(String);
    const wanted = eppArgs.filter((a, i) => i > 0 && /Metric$/.test(eppArgs[i - 1]));
    assert.ok(wanted.length >= 3, 'the EPP names its metrics');
    for (const name of [...wanted, 'vllm:num_requests_running']) {
      assert.match(metrics, new RegExp(`^${name}\\{`, 'm'), `/metrics lacks ${name}`);
    }
    assert.match(metrics, /^vllm:lora_requests_info\{max_lora="\d+",running_lora_adapters="[^"]*",waiting_lora_adapters="[^"]*"\}/m);
    // The pod's end: readiness fails at SIGTERM while it still serves, then it exits 0.
    proc.kill('SIGTERM');
    await until(() => /draining for \d+ s/.test(stderr));
    assert.equal((await fetch(url + container.readinessProbe.httpGet.path)).status, 503);
    assert.equal((await fetch(`${url}/v1/models`, { headers: auth })).status, 200);
  } finally {
    if (!/draining for/.test(stderr)) proc.kill('SIGTERM');
    const code = await exited;
    rmSync(root, { recursive: true, force: true });
    assert.equal(code, 0, stderr);
  }
});
