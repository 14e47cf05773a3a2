"""Field table for the Kubernetes protobuf decoder: message -> field number -> JSON name and kind.

Written as one compact line per field, `<number> <jsonName> <kind><flags>`, parsed once at import.
Kinds: `s` string, `i` integer (int32/int64 varint), `b` bool, `y` bytes (base64 in JSON),
`q` resource.Quantity, `n` intstr.IntOrString, `t` meta Time, `mt` meta MicroTime, `fv` FieldsV1
(raw JSON), `{s}` `{y}` `{q}` string-keyed maps, or a message name (looked up in the same package
first, then in any package). Flags: `[]` repeated; `?` the Go field is a non-pointer with
`omitempty`, so JSON leaves out its zero value (Go's marshaller still writes it on the wire).
A JSON name of `-` is a Go embedded struct whose fields land in the parent object.
"""

from __future__ import annotations

from dataclasses import dataclass

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
CORE = "io.k8s.api.core.v1"
APPS = "io.k8s.api.apps.v1"
BATCH = "io.k8s.api.batch.v1"
COORDINATION = "io.k8s.api.coordination.v1"
DISCOVERY = "io.k8s.api.discovery.v1"
AUTOSCALING = "io.k8s.api.autoscaling.v1"
SCHEDULING = "io.k8s.api.scheduling.v1"

_CONTAINER = """
    1 name s; 2 image s?; 3 command s[]; 4 args s[]; 5 workingDir s?; 6 ports ContainerPort[]
    19 envFrom EnvFromSource[]; 7 env EnvVar[]; 8 resources ResourceRequirements
    23 resizePolicy ContainerResizePolicy[]; 24 restartPolicy s
    25 restartPolicyRules ContainerRestartRule[]; 9 volumeMounts VolumeMount[]
    21 volumeDevices VolumeDevice[]; 10 livenessProbe Probe; 11 readinessProbe Probe
    22 startupProbe Probe; 12 lifecycle Lifecycle; 13 terminationMessagePath s?
    20 terminationMessagePolicy s?; 14 imagePullPolicy s?; 15 securityContext SecurityContext
    16 stdin b?; 17 stdinOnce b?; 18 tty b?
"""
_AFFINITY_TERMS = """
    1 requiredDuringSchedulingIgnoredDuringExecution PodAffinityTerm[]
    2 preferredDuringSchedulingIgnoredDuringExecution WeightedPodAffinityTerm[]
"""
_LOCAL_REF_ITEMS = "1 - LocalObjectReference; 2 items KeyToPath[]; 4 optional b"
_KEY_SELECTOR = "1 - LocalObjectReference; 2 key s; 3 optional b"

PACKAGES: dict[str, dict[str, str]] = {
    META: {
        "ObjectMeta": """
            1 name s?; 2 generateName s?; 3 namespace s?; 4 selfLink s?; 5 uid s?
            6 resourceVersion s?; 7 generation i?; 8 creationTimestamp t; 9 deletionTimestamp t
            10 deletionGracePeriodSeconds i; 11 labels {s}; 12 annotations {s}
            13 ownerReferences OwnerReference[]; 14 finalizers s[]
            17 managedFields ManagedFieldsEntry[]
        """,
        "OwnerReference": """
            5 apiVersion s; 1 kind s; 3 name s; 4 uid s; 6 controller b; 7 blockOwnerDeletion b
        """,
        "ManagedFieldsEntry": """
            1 manager s?; 2 operation s?; 3 apiVersion s?; 4 time t; 6 fieldsType s?
            7 fieldsV1 fv; 8 subresource s?
        """,
        "LabelSelector": "1 matchLabels {s}; 2 matchExpressions LabelSelectorRequirement[]",
        "LabelSelectorRequirement": "1 key s; 2 operator s; 3 values s[]",
        "Condition": """
            1 type s; 2 status s; 3 observedGeneration i?; 4 lastTransitionTime t; 5 reason s
            6 message s
        """,
        "DeleteOptions": """
            1 gracePeriodSeconds i; 2 preconditions Preconditions; 3 orphanDependents b
            4 propagationPolicy s; 5 dryRun s[]
            6 ignoreStoreReadErrorWithClusterBreakingPotential b
        """,
        "Preconditions": "1 uid s; 2 resourceVersion s",
    },
    CORE: {
        "ConfigMap": "1 metadata ObjectMeta; 4 immutable b; 2 data {s}; 3 binaryData {y}",
        "Secret": """
            1 metadata ObjectMeta; 5 immutable b; 2 data {y}; 4 stringData {s}; 3 type s?
        """,
        "Namespace": "1 metadata ObjectMeta; 2 spec NamespaceSpec; 3 status NamespaceStatus",
        "NamespaceSpec": "1 finalizers s[]",
        "NamespaceStatus": "1 phase s?; 2 conditions NamespaceCondition[]",
        "NamespaceCondition": """
            1 type s; 2 status s; 4 lastTransitionTime t; 5 reason s?; 6 message s?
        """,
        "ServiceAccount": """
            1 metadata ObjectMeta; 2 secrets ObjectReference[]
            3 imagePullSecrets LocalObjectReference[]; 4 automountServiceAccountToken b
        """,
        "ObjectReference": """
            1 kind s?; 2 namespace s?; 3 name s?; 4 uid s?; 5 apiVersion s?; 6 resourceVersion s?
            7 fieldPath s?
        """,
        "LocalObjectReference": "1 name s?",
        "Binding": "1 metadata ObjectMeta; 2 target ObjectReference",
        # Services
        "Service": "1 metadata ObjectMeta; 2 spec ServiceSpec; 3 status ServiceStatus",
        "ServiceSpec": """
            1 ports ServicePort[]; 2 selector {s}; 3 clusterIP s?; 18 clusterIPs s[]; 4 type s?
            5 externalIPs s[]; 7 sessionAffinity s?; 8 loadBalancerIP s?
            9 loadBalancerSourceRanges s[]; 10 externalName s?; 11 externalTrafficPolicy s?
            12 healthCheckNodePort i?; 13 publishNotReadyAddresses b?
            14 sessionAffinityConfig SessionAffinityConfig; 19 ipFamilies s[]; 17 ipFamilyPolicy s
            20 allocateLoadBalancerNodePorts b; 21 loadBalancerClass s
            22 internalTrafficPolicy s; 23 trafficDistribution s
        """,
        "ServicePort": """
            1 name s?; 2 protocol s?; 6 appProtocol s; 3 port i; 4 targetPort n; 5 nodePort i?
        """,
        "SessionAffinityConfig": "1 clientIP ClientIPConfig",
        "ClientIPConfig": "1 timeoutSeconds i",
        "ServiceStatus": "1 loadBalancer LoadBalancerStatus; 2 conditions Condition[]",
        "LoadBalancerStatus": "1 ingress LoadBalancerIngress[]",
        "LoadBalancerIngress": "1 ip s?; 2 hostname s?; 3 ipMode s; 4 ports PortStatus[]",
        "PortStatus": "1 port i; 2 protocol s; 3 error s",
        # Pods
        "Pod": "1 metadata ObjectMeta; 2 spec PodSpec; 3 status PodStatus",
        "PodTemplate": "1 metadata ObjectMeta; 2 template PodTemplateSpec",
        "PodTemplateSpec": "1 metadata ObjectMeta; 2 spec PodSpec",
        "PodSpec": """
            1 volumes Volume[]; 20 initContainers Container[]; 2 containers Container[]
            34 ephemeralContainers EphemeralContainer[]; 3 restartPolicy s?
            4 terminationGracePeriodSeconds i; 5 activeDeadlineSeconds i; 6 dnsPolicy s?
            7 nodeSelector {s}; 8 serviceAccountName s?; 9 serviceAccount s?
            21 automountServiceAccountToken b; 10 nodeName s?; 11 hostNetwork b?; 12 hostPID b?
            13 hostIPC b?; 27 shareProcessNamespace b; 14 securityContext PodSecurityContext
            15 imagePullSecrets LocalObjectReference[]; 16 hostname s?; 17 subdomain s?
            18 affinity Affinity; 19 schedulerName s?; 22 tolerations Toleration[]
            23 hostAliases HostAlias[]; 24 priorityClassName s?; 25 priority i
            26 dnsConfig PodDNSConfig; 28 readinessGates PodReadinessGate[]
            29 runtimeClassName s; 30 enableServiceLinks b; 31 preemptionPolicy s
            32 overhead {q}; 33 topologySpreadConstraints TopologySpreadConstraint[]
            35 setHostnameAsFQDN b; 36 os PodOS; 37 hostUsers b
            38 schedulingGates PodSchedulingGate[]; 39 resourceClaims PodResourceClaim[]
            40 resources ResourceRequirements; 41 hostnameOverride s
            42 workloadRef WorkloadReference
        """,
        "Container": _CONTAINER,
        "EphemeralContainer": "1 - EphemeralContainerCommon; 2 targetContainerName s?",
        "EphemeralContainerCommon": _CONTAINER,
        "ContainerPort": """
            1 name s?; 2 hostPort i?; 3 containerPort i; 4 protocol s?; 5 hostIP s?
        """,
        "ContainerResizePolicy": "1 resourceName s; 2 restartPolicy s",
        "ContainerRestartRule": "1 action s; 2 exitCodes ContainerRestartRuleOnExitCodes",
        "ContainerRestartRuleOnExitCodes": "1 operator s; 2 values i[]",
        "EnvVar": "1 name s; 2 value s?; 3 valueFrom EnvVarSource",
        "EnvVarSource": """
            1 fieldRef ObjectFieldSelector; 2 resourceFieldRef ResourceFieldSelector
            3 configMapKeyRef ConfigMapKeySelector; 4 secretKeyRef SecretKeySelector
            5 fileKeyRef FileKeySelector
        """,
        "ObjectFieldSelector": "1 apiVersion s?; 2 fieldPath s",
        "ResourceFieldSelector": "1 containerName s?; 2 resource s; 3 divisor q",
        "ConfigMapKeySelector": _KEY_SELECTOR,
        "SecretKeySelector": _KEY_SELECTOR,
        "FileKeySelector": "1 volumeName s; 2 path s; 3 key s; 4 optional b",
        "EnvFromSource": """
            1 prefix s?; 2 configMapRef ConfigMapEnvSource; 3 secretRef SecretEnvSource
        """,
        "ConfigMapEnvSource": "1 - LocalObjectReference; 2 optional b",
        "SecretEnvSource": "1 - LocalObjectReference; 2 optional b",
        "ResourceRequirements": "1 limits {q}; 2 requests {q}; 3 claims ResourceClaim[]",
        "ResourceClaim": "1 name s; 2 request s?",
        "VolumeMount": """
            1 name s; 2 readOnly b?; 7 recursiveReadOnly s; 3 mountPath s; 4 subPath s?
            5 mountPropagation s; 6 subPathExpr s?
        """,
        "VolumeDevice": "1 name s; 2 devicePath s",
        "Probe": """
            1 - ProbeHandler; 2 initialDelaySeconds i?; 3 timeoutSeconds i?; 4 periodSeconds i?
            5 successThreshold i?; 6 failureThreshold i?; 7 terminationGracePeriodSeconds i
        """,
        "ProbeHandler": """
            1 exec ExecAction; 2 httpGet HTTPGetAction; 3 tcpSocket TCPSocketAction
            4 grpc GRPCAction
        """,
        "ExecAction": "1 command s[]",
        "HTTPGetAction": """
            1 path s?; 2 port n; 3 host s?; 4 scheme s?; 5 httpHeaders HTTPHeader[]
        """,
        "HTTPHeader": "1 name s; 2 value s",
        "TCPSocketAction": "1 port n; 2 host s?",
        "GRPCAction": "1 port i; 2 service s",
        "Lifecycle": """
            1 postStart LifecycleHandler; 2 preStop LifecycleHandler; 3 stopSignal s
        """,
        "LifecycleHandler": """
            1 exec ExecAction; 2 httpGet HTTPGetAction; 3 tcpSocket TCPSocketAction
            4 sleep SleepAction
        """,
        "SleepAction": "1 seconds i",
        "SecurityContext": """
            1 capabilities Capabilities; 2 privileged b; 3 seLinuxOptions SELinuxOptions
            10 windowsOptions WindowsSecurityContextOptions; 4 runAsUser i; 8 runAsGroup i
            5 runAsNonRoot b; 6 readOnlyRootFilesystem b; 7 allowPrivilegeEscalation b
            9 procMount s; 11 seccompProfile SeccompProfile; 12 appArmorProfile AppArmorProfile
            13 ulimits Ulimit[]
        """,
        "Ulimit": "1 name s; 2 hard i; 3 soft i",
        "Capabilities": "1 add s[]; 2 drop s[]",
        "SELinuxOptions": "1 user s?; 2 role s?; 3 type s?; 4 level s?",
        "WindowsSecurityContextOptions": """
            1 gmsaCredentialSpecName s; 2 gmsaCredentialSpec s; 3 runAsUserName s
            4 hostProcess b
        """,
        "SeccompProfile": "1 type s; 2 localhostProfile s",
        "AppArmorProfile": "1 type s; 2 localhostProfile s",
        "PodSecurityContext": """
            1 seLinuxOptions SELinuxOptions; 8 windowsOptions WindowsSecurityContextOptions
            2 runAsUser i; 6 runAsGroup i; 3 runAsNonRoot b; 4 supplementalGroups i[]
            12 supplementalGroupsPolicy s; 5 fsGroup i; 7 sysctls Sysctl[]
            9 fsGroupChangePolicy s; 10 seccompProfile SeccompProfile
            11 appArmorProfile AppArmorProfile; 13 seLinuxChangePolicy s
        """,
        "Sysctl": "1 name s; 2 value s",
        "Toleration": "1 key s?; 2 operator s?; 3 value s?; 4 effect s?; 5 tolerationSeconds i",
        "Affinity": """
            1 nodeAffinity NodeAffinity; 2 podAffinity PodAffinity
            3 podAntiAffinity PodAntiAffinity
        """,
        "NodeAffinity": """
            1 requiredDuringSchedulingIgnoredDuringExecution NodeSelector
            2 preferredDuringSchedulingIgnoredDuringExecution PreferredSchedulingTerm[]
        """,
        "NodeSelector": "1 nodeSelectorTerms NodeSelectorTerm[]",
        "NodeSelectorTerm": """
            1 matchExpressions NodeSelectorRequirement[]; 2 matchFields NodeSelectorRequirement[]
        """,
        "NodeSelectorRequirement": "1 key s; 2 operator s; 3 values s[]",
        "PreferredSchedulingTerm": "1 weight i; 2 preference NodeSelectorTerm",
        "PodAffinity": _AFFINITY_TERMS,
        "PodAntiAffinity": _AFFINITY_TERMS,
        "PodAffinityTerm": """
            1 labelSelector LabelSelector; 2 namespaces s[]; 3 topologyKey s
            4 namespaceSelector LabelSelector; 5 matchLabelKeys s[]; 6 mismatchLabelKeys s[]
        """,
        "WeightedPodAffinityTerm": "1 weight i; 2 podAffinityTerm PodAffinityTerm",
        "TopologySpreadConstraint": """
            1 maxSkew i; 2 topologyKey s; 3 whenUnsatisfiable s; 4 labelSelector LabelSelector
            5 minDomains i; 6 nodeAffinityPolicy s; 7 nodeTaintsPolicy s; 8 matchLabelKeys s[]
        """,
        "HostAlias": "1 ip s; 2 hostnames s[]",
        "PodDNSConfig": """
            1 nameservers s[]; 2 searches s[]; 3 options PodDNSConfigOption[]
        """,
        "PodDNSConfigOption": "1 name s?; 2 value s",
        "PodReadinessGate": "1 conditionType s",
        "PodOS": "1 name s",
        "PodSchedulingGate": "1 name s",
        "PodResourceClaim": "1 name s; 3 resourceClaimName s; 4 resourceClaimTemplateName s",
        "WorkloadReference": "1 name s; 2 podGroup s; 3 podGroupReplicaKey s?",
        # Volumes: the common sources; the in-tree cloud and legacy plugins are refused.
        "Volume": "1 name s; 2 - VolumeSource",
        "VolumeSource": """
            1 hostPath HostPathVolumeSource; 2 emptyDir EmptyDirVolumeSource
            6 secret SecretVolumeSource; 7 nfs NFSVolumeSource
            10 persistentVolumeClaim PersistentVolumeClaimVolumeSource
            16 downwardAPI DownwardAPIVolumeSource; 19 configMap ConfigMapVolumeSource
            26 projected ProjectedVolumeSource; 28 csi CSIVolumeSource
            29 ephemeral EphemeralVolumeSource; 30 image ImageVolumeSource
        """,
        "HostPathVolumeSource": "1 path s; 2 type s",
        "EmptyDirVolumeSource": "1 medium s?; 2 sizeLimit q",
        "SecretVolumeSource": """
            1 secretName s?; 2 items KeyToPath[]; 3 defaultMode i; 4 optional b
        """,
        "ConfigMapVolumeSource": """
            1 - LocalObjectReference; 2 items KeyToPath[]; 3 defaultMode i; 4 optional b
        """,
        "KeyToPath": "1 key s; 2 path s; 3 mode i",
        "NFSVolumeSource": "1 server s; 2 path s; 3 readOnly b?",
        "PersistentVolumeClaimVolumeSource": "1 claimName s; 2 readOnly b?",
        "DownwardAPIVolumeSource": "1 items DownwardAPIVolumeFile[]; 2 defaultMode i",
        "DownwardAPIVolumeFile": """
            1 path s; 2 fieldRef ObjectFieldSelector; 3 resourceFieldRef ResourceFieldSelector
            4 mode i
        """,
        "ProjectedVolumeSource": "1 sources VolumeProjection[]; 2 defaultMode i",
        "VolumeProjection": """
            1 secret SecretProjection; 2 downwardAPI DownwardAPIProjection
            3 configMap ConfigMapProjection; 4 serviceAccountToken ServiceAccountTokenProjection
            5 clusterTrustBundle ClusterTrustBundleProjection
        """,
        "SecretProjection": _LOCAL_REF_ITEMS,
        "ConfigMapProjection": _LOCAL_REF_ITEMS,
        "DownwardAPIProjection": "1 items DownwardAPIVolumeFile[]",
        "ServiceAccountTokenProjection": "1 audience s?; 2 expirationSeconds i; 3 path s",
        "ClusterTrustBundleProjection": """
            1 name s; 2 signerName s; 3 labelSelector LabelSelector; 5 optional b; 4 path s
        """,
        "CSIVolumeSource": """
            1 driver s; 2 readOnly b; 3 fsType s; 4 volumeAttributes {s}
            5 nodePublishSecretRef LocalObjectReference
        """,
        "ImageVolumeSource": "1 reference s?; 2 pullPolicy s?",
        "EphemeralVolumeSource": "1 volumeClaimTemplate PersistentVolumeClaimTemplate",
        "PersistentVolumeClaimTemplate": """
            1 metadata ObjectMeta; 2 spec PersistentVolumeClaimSpec
        """,
        "PersistentVolumeClaimSpec": """
            1 accessModes s[]; 4 selector LabelSelector; 2 resources VolumeResourceRequirements
            3 volumeName s?; 5 storageClassName s; 6 volumeMode s
            7 dataSource TypedLocalObjectReference; 8 dataSourceRef TypedObjectReference
            9 volumeAttributesClassName s
        """,
        "VolumeResourceRequirements": "1 limits {q}; 2 requests {q}",
        "TypedLocalObjectReference": "1 apiGroup s; 2 kind s; 3 name s",
        "TypedObjectReference": "1 apiGroup s; 2 kind s; 3 name s; 4 namespace s",
        # Pod status, as a kubelet-like writer would send it.
        "PodStatus": """
            17 observedGeneration i?; 1 phase s?; 2 conditions PodCondition[]; 3 message s?
            4 reason s?; 11 nominatedNodeName s?; 5 hostIP s?; 16 hostIPs HostIP[]; 6 podIP s?
            12 podIPs PodIP[]; 7 startTime t; 10 initContainerStatuses ContainerStatus[]
            8 containerStatuses ContainerStatus[]; 9 qosClass s?
            13 ephemeralContainerStatuses ContainerStatus[]; 14 resize s?
            15 resourceClaimStatuses PodResourceClaimStatus[]; 19 allocatedResources {q}
            20 resources ResourceRequirements
        """,
        "PodCondition": """
            1 type s; 7 observedGeneration i?; 2 status s; 3 lastProbeTime t
            4 lastTransitionTime t; 5 reason s?; 6 message s?
        """,
        "HostIP": "1 ip s",
        "PodIP": "1 ip s",
        "PodResourceClaimStatus": "1 name s; 2 resourceClaimName s",
        "ContainerStatus": """
            1 name s; 2 state ContainerState; 3 lastState ContainerState; 4 ready b
            5 restartCount i; 6 image s; 7 imageID s; 8 containerID s?; 9 started b
            10 allocatedResources {q}; 11 resources ResourceRequirements; 15 stopSignal s
        """,
        "ContainerState": """
            1 waiting ContainerStateWaiting; 2 running ContainerStateRunning
            3 terminated ContainerStateTerminated
        """,
        "ContainerStateWaiting": "1 reason s?; 2 message s?",
        "ContainerStateRunning": "1 startedAt t",
        "ContainerStateTerminated": """
            1 exitCode i; 2 signal i?; 3 reason s?; 4 message s?; 5 startedAt t
            6 finishedAt t; 7 containerID s?
        """,
        # Events and endpoints
        "Event": """
            1 metadata ObjectMeta; 2 involvedObject ObjectReference; 3 reason s?; 4 message s?
            5 source EventSource; 6 firstTimestamp t; 7 lastTimestamp t; 8 count i?; 9 type s?
            10 eventTime mt; 11 series EventSeries; 12 action s?; 13 related ObjectReference
            14 reportingComponent s; 15 reportingInstance s
        """,
        "EventSource": "1 component s?; 2 host s?",
        "EventSeries": "1 count i?; 2 lastObservedTime mt",
        "Endpoints": "1 metadata ObjectMeta; 2 subsets EndpointSubset[]",
        "EndpointSubset": """
            1 addresses EndpointAddress[]; 2 notReadyAddresses EndpointAddress[]
            3 ports EndpointPort[]
        """,
        "EndpointAddress": "1 ip s; 3 hostname s?; 4 nodeName s; 2 targetRef ObjectReference",
        "EndpointPort": "1 name s?; 2 port i; 3 protocol s?; 4 appProtocol s",
    },
    APPS: {
        "Deployment": "1 metadata ObjectMeta; 2 spec DeploymentSpec; 3 status DeploymentStatus",
        "DeploymentSpec": """
            1 replicas i; 2 selector LabelSelector; 3 template PodTemplateSpec
            4 strategy DeploymentStrategy; 5 minReadySeconds i?; 6 revisionHistoryLimit i
            7 paused b?; 9 progressDeadlineSeconds i; 10 podReplacementPolicy s
        """,
        "DeploymentStrategy": "1 type s?; 2 rollingUpdate RollingUpdateDeployment",
        "RollingUpdateDeployment": "1 maxUnavailable n; 2 maxSurge n",
        "DeploymentStatus": """
            1 observedGeneration i?; 2 replicas i?; 3 updatedReplicas i?; 7 readyReplicas i?
            4 availableReplicas i?; 5 unavailableReplicas i?; 9 terminatingReplicas i
            6 conditions DeploymentCondition[]; 8 collisionCount i
        """,
        "DeploymentCondition": """
            1 type s; 2 status s; 6 lastUpdateTime t; 7 lastTransitionTime t; 4 reason s?
            5 message s?
        """,
        "ReplicaSet": "1 metadata ObjectMeta; 2 spec ReplicaSetSpec; 3 status ReplicaSetStatus",
        "ReplicaSetSpec": """
            1 replicas i; 4 minReadySeconds i?; 2 selector LabelSelector
            3 template PodTemplateSpec
        """,
        "ReplicaSetStatus": """
            1 replicas i; 2 fullyLabeledReplicas i?; 4 readyReplicas i?; 5 availableReplicas i?
            7 terminatingReplicas i; 3 observedGeneration i?; 6 conditions ReplicaSetCondition[]
        """,
        "ReplicaSetCondition": """
            1 type s; 2 status s; 3 lastTransitionTime t; 4 reason s?; 5 message s?
        """,
    },
    BATCH: {
        "Job": "1 metadata ObjectMeta; 2 spec JobSpec; 3 status JobStatus",
        "JobSpec": """
            1 parallelism i; 2 completions i; 3 activeDeadlineSeconds i
            11 podFailurePolicy PodFailurePolicy; 16 successPolicy SuccessPolicy
            7 backoffLimit i; 12 backoffLimitPerIndex i; 13 maxFailedIndexes i
            4 selector LabelSelector; 5 manualSelector b; 6 template PodTemplateSpec
            8 ttlSecondsAfterFinished i; 9 completionMode s; 10 suspend b
            14 podReplacementPolicy s; 15 managedBy s
        """,
        "JobStatus": """
            1 conditions JobCondition[]; 2 startTime t; 3 completionTime t; 4 active i?
            5 succeeded i?; 6 failed i?; 11 terminating i; 7 completedIndexes s?
            10 failedIndexes s; 8 uncountedTerminatedPods UncountedTerminatedPods; 9 ready i
        """,
        "JobCondition": """
            1 type s; 2 status s; 3 lastProbeTime t; 4 lastTransitionTime t; 5 reason s?
            6 message s?
        """,
        "UncountedTerminatedPods": "1 succeeded s[]; 2 failed s[]",
        "PodFailurePolicy": "1 rules PodFailurePolicyRule[]",
        "PodFailurePolicyRule": """
            1 action s; 2 onExitCodes PodFailurePolicyOnExitCodesRequirement
            3 onPodConditions PodFailurePolicyOnPodConditionsPattern[]
        """,
        "PodFailurePolicyOnExitCodesRequirement": "1 containerName s; 2 operator s; 3 values i[]",
        "PodFailurePolicyOnPodConditionsPattern": "1 type s; 2 status s",
        "SuccessPolicy": "1 rules SuccessPolicyRule[]",
        "SuccessPolicyRule": "1 succeededIndexes s; 2 succeededCount i",
        "CronJob": "1 metadata ObjectMeta; 2 spec CronJobSpec; 3 status CronJobStatus",
        "CronJobSpec": """
            1 schedule s; 8 timeZone s; 2 startingDeadlineSeconds i; 3 concurrencyPolicy s?
            4 suspend b; 5 jobTemplate JobTemplateSpec; 6 successfulJobsHistoryLimit i
            7 failedJobsHistoryLimit i
        """,
        "CronJobStatus": """
            1 active ObjectReference[]; 4 lastScheduleTime t; 5 lastSuccessfulTime t
        """,
        "JobTemplateSpec": "1 metadata ObjectMeta; 2 spec JobSpec",
    },
    COORDINATION: {
        "Lease": "1 metadata ObjectMeta; 2 spec LeaseSpec",
        "LeaseSpec": """
            1 holderIdentity s; 2 leaseDurationSeconds i; 3 acquireTime mt; 4 renewTime mt
            5 leaseTransitions i; 6 strategy s; 7 preferredHolder s
        """,
    },
    DISCOVERY: {
        "EndpointSlice": """
            1 metadata ObjectMeta; 4 addressType s; 2 endpoints Endpoint[]
            3 ports EndpointPort[]
        """,
        "Endpoint": """
            1 addresses s[]; 2 conditions EndpointConditions; 3 hostname s
            4 targetRef ObjectReference; 5 deprecatedTopology {s}; 6 nodeName s; 7 zone s
            8 hints EndpointHints
        """,
        "EndpointConditions": "1 ready b; 2 serving b; 3 terminating b",
        "EndpointPort": "1 name s; 2 protocol s; 3 port i; 4 appProtocol s",
        "EndpointHints": "1 forZones ForZone[]; 2 forNodes ForNode[]",
        "ForZone": "1 name s",
        "ForNode": "1 name s",
    },
    SCHEDULING: {
        "PriorityClass": """
            1 metadata ObjectMeta; 2 value i; 3 globalDefault b?; 4 description s?
            5 preemptionPolicy s
        """,
    },
    AUTOSCALING: {
        "Scale": "1 metadata ObjectMeta; 2 spec ScaleSpec; 3 status ScaleStatus",
        "ScaleSpec": "1 replicas i?",
        "ScaleStatus": "1 replicas i; 2 selector s?",
    },
}

# (apiVersion, kind) from the envelope -> top-level message.
TOP_LEVEL: dict[tuple[str, str], str] = {
    **{("v1", kind): f"{CORE}.{kind}" for kind in (
        "ConfigMap", "Secret", "Namespace", "ServiceAccount", "Service", "Pod", "PodTemplate",
        "Event", "Endpoints", "Binding")},
    ("apps/v1", "Deployment"): f"{APPS}.Deployment",
    ("apps/v1", "ReplicaSet"): f"{APPS}.ReplicaSet",
    ("batch/v1", "Job"): f"{BATCH}.Job",
    ("batch/v1", "CronJob"): f"{BATCH}.CronJob",
    ("coordination.k8s.io/v1", "Lease"): f"{COORDINATION}.Lease",
    ("discovery.k8s.io/v1", "EndpointSlice"): f"{DISCOVERY}.EndpointSlice",
    ("autoscaling/v1", "Scale"): f"{AUTOSCALING}.Scale",
    ("scheduling.k8s.io/v1", "PriorityClass"): f"{SCHEDULING}.PriorityClass",
}
# Options kinds are registered in every group version, so clients label them with whichever
# group they are talking to.
ANY_VERSION: dict[str, str] = {"DeleteOptions": f"{META}.DeleteOptions"}

SCALARS = frozenset({"s", "i", "b", "y", "q", "n", "t", "mt", "fv"})
MAPS = {"{s}": "s", "{y}": "y", "{q}": "q"}


@dataclass(frozen=True, slots=True)
class Field:
    number: int
    name: str  # JSON name; "-" for an embedded struct
    kind: str  # a scalar code, a map code, or a message's full name
    repeated: bool
    omit_zero: bool


@dataclass(frozen=True, slots=True)
class Message:
    full_name: str
    fields: dict[int, Field]


def _parse_field(text: str) -> tuple[int, str, str, bool, bool]:
    number, name, kind = text.split()
    omit_zero = kind.endswith("?")
    kind = kind.removesuffix("?")
    repeated = kind.endswith("[]")
    return int(number), name, kind.removesuffix("[]"), repeated, omit_zero


def _build() -> dict[str, Message]:
    owners: dict[str, list[str]] = {}  # short name -> packages defining it
    for package, types in PACKAGES.items():
        for short in types:
            owners.setdefault(short, []).append(package)

    def resolve(package: str, kind: str) -> str:
        if kind in SCALARS or kind in MAPS:
            return kind
        if kind in PACKAGES[package]:
            return f"{package}.{kind}"
        found = owners.get(kind, [])
        if len(found) != 1:
            raise ValueError(f"protobuf table: cannot resolve {kind!r} from {package}")
        return f"{found[0]}.{kind}"

    messages: dict[str, Message] = {}
    for package, types in PACKAGES.items():
        for short, spec in types.items():
            fields: dict[int, Field] = {}
            for line in spec.replace(";", "\n").splitlines():
                if not line.strip():
                    continue
                number, name, kind, repeated, omit_zero = _parse_field(line)
                if number in fields:
                    raise ValueError(f"protobuf table: {short} repeats field {number}")
                fields[number] = Field(number, name, resolve(package, kind), repeated, omit_zero)
            messages[f"{package}.{short}"] = Message(f"{package}.{short}", fields)
    return messages


MESSAGES: dict[str, Message] = _build()
