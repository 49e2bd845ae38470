{{/*
Names. Every object is named after the release: <release>-stack, <release>-snapshot, ...
*/}}
{{- define "vaultdr-ops.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{- define "vaultdr-ops.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vaultdr
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selector labels of one agent: (dict "root" $ "component" "snapshot") */}}
{{- define "vaultdr-ops.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vaultdr-ops.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{/* The active node's address: https://<release>-active.<namespace>.svc:<port> */}}
{{- define "vaultdr-ops.vaultAddr" -}}
{{- if .Values.vault.addr -}}
{{- .Values.vault.addr -}}
{{- else -}}
{{- printf "https://%s-active.%s.svc:%d" .Values.vault.release .Release.Namespace (int .Values.vault.port) -}}
{{- end -}}
{{- end }}

{{/* Every server pod through the headless service, comma-separated, in ordinal order. */}}
{{- define "vaultdr-ops.nodeAddrs" -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.vault.replicas) -}}
{{- $addrs = append $addrs (printf "https://%s-%d.%s-internal.%s.svc:%d" $.Values.vault.release $i $.Values.vault.release $.Release.Namespace (int $.Values.vault.port)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end }}

{{/*
Refuse values that would deploy agents which cannot work, with a message naming the
field: a stack whose node count or snapshot service account disagrees with this release.
*/}}
{{- define "vaultdr-ops.checks" -}}
{{- $stack := .Values.stack | default dict -}}
{{- if and (hasKey $stack "nodes") (ne (int $stack.nodes) (int .Values.vault.replicas)) -}}
{{- fail (printf "stack.nodes is %d but vault.replicas is %d: they must describe the same StatefulSet" (int $stack.nodes) (int .Values.vault.replicas)) -}}
{{- end -}}
{{- $snapshots := $stack.snapshots | default dict -}}
{{- with $snapshots.service_account -}}
{{- if and .namespace (ne .namespace $.Release.Namespace) -}}
{{- fail (printf "stack.snapshots.service_account.namespace is %q but the release namespace is %q: the snapshot agent could not log in" .namespace $.Release.Namespace) -}}
{{- end -}}
{{- if and .name (ne .name $.Values.serviceAccounts.snapshot.name) -}}
{{- fail (printf "stack.snapshots.service_account.name is %q but serviceAccounts.snapshot.name is %q: the snapshot agent could not log in" .name $.Values.serviceAccounts.snapshot.name) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The pod spec every agent shares: (dict "root" $ "component" "snapshot" "agent" .Values.snapshot
"serviceAccount" .Values.serviceAccounts.snapshot "restartPolicy" "Always")
*/}}
{{- define "vaultdr-ops.podSpec" -}}
{{- $root := .root -}}
{{- $agent := .agent -}}
{{- $credentials := $agent.awsCredentialsSecret | default $root.Values.aws.credentialsSecret -}}
serviceAccountName: {{ .serviceAccount.name }}
automountServiceAccountToken: {{ $agent.automountServiceAccountToken }}
restartPolicy: {{ .restartPolicy }}
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .component }}
    image: {{ include "vaultdr-ops.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: ["vaultdr"]
    args:
      - agent
      - {{ .component }}
      - --config
      - /etc/vaultdr/stack.yaml
      {{- range $agent.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      - name: VAULTDR_VAULT_ADDR
        value: {{ include "vaultdr-ops.vaultAddr" $root | quote }}
      - name: VAULTDR_VAULT_CACERT
        value: /etc/vaultdr-tls/ca.crt
      - name: VAULTDR_NODE_ADDRS
        value: {{ include "vaultdr-ops.nodeAddrs" $root | quote }}
      - name: VAULTDR_STATEFULSET
        value: {{ $root.Values.vault.release | quote }}
      - name: VAULTDR_NAMESPACE
        valueFrom:
          fieldRef:
            fieldPath: metadata.namespace
      - name: VAULTDR_SA_TOKEN_FILE
        value: /var/run/secrets/vaultdr/token/token
      - name: VAULTDR_STATE_DIR
        value: /tmp/vaultdr
      - name: HOME
        value: /tmp
      - name: AWS_REGION
        value: {{ $root.Values.aws.region | quote }}
      {{- with $root.Values.aws.endpointUrl }}
      - name: AWS_ENDPOINT_URL
        value: {{ . | quote }}
      {{- end }}
      {{- with $credentials }}
      - name: AWS_ACCESS_KEY_ID
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: AWS_ACCESS_KEY_ID
      - name: AWS_SECRET_ACCESS_KEY
        valueFrom:
          secretKeyRef:
            name: {{ . }}
            key: AWS_SECRET_ACCESS_KEY
      {{- end }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml $agent.resources | nindent 6 }}
    {{- with .probes }}
    {{- include "vaultdr-ops.healthProbes" . | nindent 4 }}
    {{- end }}
    volumeMounts:
      - name: stack
        mountPath: /etc/vaultdr
        readOnly: true
      - name: vault-ca
        mountPath: /etc/vaultdr-tls
        readOnly: true
      - name: token
        mountPath: /var/run/secrets/vaultdr/token
        readOnly: true
      - name: tmp
        mountPath: /tmp
volumes:
  - name: stack
    configMap:
      name: {{ include "vaultdr-ops.fullname" $root }}-stack
  - name: vault-ca
    secret:
      secretName: {{ $root.Values.vault.tlsSecret }}
      # Only the CA: the server's private key never reaches an agent.
      items:
        - key: ca.crt
          path: ca.crt
  - name: token
    projected:
      sources:
        - serviceAccountToken:
            audience: {{ $root.Values.tokenAudience | quote }}
            expirationSeconds: {{ int $root.Values.tokenExpirationSeconds }}
            path: token
  - name: tmp
    emptyDir:
      sizeLimit: {{ $agent.tmpSizeLimit }}
{{- end }}

{{/* Pod template metadata: labels plus a checksum of the stack so pods restart when it changes. */}}
{{- define "vaultdr-ops.podMetadata" -}}
labels:
  {{- include "vaultdr-ops.selectorLabels" . | nindent 2 }}
  app.kubernetes.io/part-of: vaultdr
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/stack: {{ toYaml .root.Values.stack | sha256sum }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The long-running agents' exec probes on their heartbeat (`vaultdr agent health`):
readyAge and liveAge are the --max-age of readiness and liveness. The agent beats at
least every 10 s while it waits, so any snapshot interval is fine; the ages bound one
snapshot, one watch tick (a restore announces its own, longer budget). A timeout of
15 s leaves room for the CLI's start on a CPU-limited pod. */}}
{{- define "vaultdr-ops.healthProbes" -}}
readinessProbe:
  exec:
    command: [vaultdr, agent, health, --max-age, {{ .readyAge | quote }}]
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 15
  failureThreshold: 3
livenessProbe:
  exec:
    command: [vaultdr, agent, health, --max-age, {{ .liveAge | quote }}]
  initialDelaySeconds: 30
  periodSeconds: 30
  timeoutSeconds: 15
  failureThreshold: 3
{{- end }}
