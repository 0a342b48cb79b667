//! How a [`SecurityCore`] is built: its acceptors, Digest state and precomputed headers from the
//! configuration, then what the `with_*` methods add (Kerberos, the domain, the directory, the pool
//! journal).

use super::*;

impl SecurityCore {
    /// A core with `config`'s NTLM and Digest (when set) and users from `credentials`; Kerberos,
    /// the domain, the directory and the pool journal are added with the `with_*` methods.
    pub fn new(config: CoreConfig, credentials: Arc<dyn CredentialStore>) -> Self {
        let ntlm = config.ntlm.as_ref().map(|n| {
            NtlmAcceptor::new(sagw_ntlm::AcceptorConfig {
                identity: n.identity.clone(),
                max_clock_skew: n.max_clock_skew,
                include_timestamp: n.include_timestamp,
                version: n.version,
                target_name: n.targetname.clone(),
            })
        });
        let digest = config.digest.as_ref().map(|d| DigestState {
            server: DigestServer::new(
                sagw_digest::DigestConfig {
                    node_id: config.node_id,
                    ..d.config.clone()
                },
                NonceKey::new(d.nonce_key),
            ),
            counter: Mutex::new({
                let counter = NonceCounter::new(d.max_tracked_nonces, d.config.nonce_lifetime)
                    .with_owner_share(d.max_tracked_nonces_per_identity);
                match d.started {
                    Some(t) => counter.stale_before(t),
                    None => counter,
                }
            }),
            key: d.nonce_key,
            decoy: [
                sagw_digest::Algorithm::Md5,
                sagw_digest::Algorithm::Sha256,
                sagw_digest::Algorithm::Sha512_256,
            ]
            .map(|a| {
                let seed = [
                    b"sagw decoy HA1 for unknown users\0".as_slice(),
                    &d.nonce_key,
                ]
                .concat();
                (a, a.hash_hex(&seed))
            }),
        });
        let limits = ManagerLimits {
            recent_final_legs_max: config.handshakes.max_recent_final_legs,
        };
        let sas = SaManager::new(limits).with_max_per_identity(config.max_sas_per_identity);
        let ntlm_handshakes = NtlmHandshakes::new(
            config.handshakes.window,
            config.ntlm.as_ref().and_then(|n| n.challenge_key.as_ref()),
        );
        let info_tails = InfoTails {
            ntlm: InfoTails::tail(
                config.ntlm.as_ref().map(|n| n.targetname.as_str()),
                &config.realm,
            ),
            kerberos: InfoTails::tail(None, &config.realm),
        };
        let ntlm_challenge_header = match (&ntlm, &config.ntlm) {
            (Some(acceptor), Some(n)) => handshakes::NtlmChallengeHeader::new(
                acceptor,
                &n.targetname,
                &config.realm,
                config.version,
            ),
            _ => None,
        };
        let ms_challenges = challenges::MsChallenges {
            ntlm: config.ntlm.as_ref().map(|n| {
                challenges::MsChallenges::value(
                    "NTLM",
                    &config.realm,
                    &n.targetname,
                    config.version,
                )
            }),
            kerberos: None,
        };
        SecurityCore {
            info_tails,
            ms_challenges,
            ntlm_challenge_header,
            config,
            credentials,
            ntlm,
            kerberos: None,
            kerberos_domain: None,
            kerberos_offload: false,
            finished: Mutex::new(FinishedJobs::new()),
            domain_ntlm: None,
            domain_settings: DomainSettings::default(),
            directory: None,
            kerberos_replay: Arc::new(NoReplayRegistry),
            final_legs_pooled: false,
            kerberos_replay_unavailable: std::sync::atomic::AtomicU64::new(0),
            digest,
            policies: vec![PolicyState {
                schemes: SchemeSet::ALL,
                digest: None,
            }],
            sas,
            ntlm_handshakes,
            counters: Counters::default(),
        }
    }

    /// Enables Kerberos with an acceptor; `identity_domain` overrides the SIP domain of identities
    /// (default: the principal's realm in lower case).
    pub fn with_kerberos(
        mut self,
        backend: Box<dyn KerberosBackend>,
        identity_domain: Option<String>,
    ) -> Self {
        self.kerberos = Some(backend);
        self.kerberos_domain = identity_domain;
        self.info_tails.kerberos = InfoTails::tail(self.kerberos_targetname(), &self.config.realm);
        self.ms_challenges.kerberos = self.kerberos_targetname().map(|target| {
            challenges::MsChallenges::value(
                "Kerberos",
                &self.config.realm,
                target,
                self.config.version,
            )
        });
        self
    }

    /// Kerberos AP-REQs are not accepted inline: [`SecurityCore::on_request`] answers
    /// [`Decision::Deferred`] with the job, which the caller runs elsewhere
    /// ([`run_job`](Self::run_job), on a worker thread), files ([`job_done`](Self::job_done))
    /// and then judges the request again, which takes the outcome instead of accepting. The
    /// result is what the inline path gives.
    pub fn with_kerberos_offload(mut self) -> Self {
        self.kerberos_offload = true;
        self
    }

    /// NTLM sign-ins of users the credentials store does not have are verified by the domain
    /// (`verifier`, blocking): always off the caller's thread ([`Decision::Deferred`] with
    /// [`AuthJob::DomainNtlm`]). The store is asked first: its users are verified here.
    pub fn with_domain_ntlm(
        mut self,
        verifier: Arc<dyn DomainNtlmVerifier>,
        settings: DomainSettings,
    ) -> Self {
        self.domain_ntlm = Some(verifier);
        self.domain_settings = settings;
        self
    }

    /// The directory that names the SIP identity of domain accounts: NTLM users the domain
    /// verified and Kerberos principals (instead of `sip:<user>@<domain>`). Asked on the worker
    /// thread right after the domain or the KDC vouched for the account; inline only for a core
    /// without Kerberos offload (tests).
    pub fn with_directory(mut self, directory: Arc<dyn AccountDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Whether NTLM users outside the credentials store go to the domain.
    pub fn serves_domain_ntlm(&self) -> bool {
        self.domain_ntlm.is_some() && self.ntlm.is_some()
    }

    /// The pool's check that an authenticator, or an NTLM final leg, is used once across every
    /// node (asked on a worker after each accepted AP-REQ and each NTLM final leg whose proof
    /// verified: NTLM final legs are then [`Decision::Deferred`] as `NtlmFinalLeg` jobs). The
    /// default, [`NoReplayRegistry`], leaves it to MIT's replay cache and this gateway's own
    /// record of final legs.
    pub fn with_kerberos_replay_registry(
        mut self,
        registry: Arc<dyn KerberosReplayRegistry>,
    ) -> Self {
        self.kerberos_replay = registry;
        self.final_legs_pooled = true;
        self
    }

    /// Whether Kerberos is enabled ([`with_kerberos`](Self::with_kerberos)).
    pub fn serves_kerberos(&self) -> bool {
        self.kerberos.is_some()
    }

    /// AP-REQs accepted because the replay registry could not tell (since start).
    pub fn kerberos_replay_unavailable(&self) -> u64 {
        self.kerberos_replay_unavailable
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Computes NTLM server challenges with `source` instead of the keyed MAC: for replaying a
    /// recorded sign-in, whose challenge no MAC reproduces ([`crate::RecordedChallenges`]).
    pub fn with_ntlm_challenges(mut self, source: Box<dyn ChallengeSource>) -> Self {
        self.ntlm_handshakes.set_source(source);
        self
    }

    /// Keeps the pool journal: what the other gateways of a pool, or the next start of this one,
    /// must learn ([`crate::pool`]); drained with [`drain_pool_journal`](Self::drain_pool_journal).
    pub fn enable_pool_journal(mut self) -> Self {
        self.sas.enable_journal();
        self
    }
}
