//! The template DC folder: provisioned once per Samba version and [`RECIPE`] (8–60 s), with the
//! users, account states, schema stand-in, service accounts and keytabs every test DC starts with;
//! each DC is then a copy of it (see `AdDc::instantiate`).

use super::*;

/// Where the template lives (per target dir, per Samba version and [`RECIPE`]).
fn template_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sagw-ad-template")
}

/// A template older than this is provisioned again: account expiry and password ages are
/// relative to the time of provisioning (max password age 999 days).
const TEMPLATE_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

fn samba_version() -> Result<String, String> {
    let v = run(Command::new("samba").arg("-V"))?;
    Ok(v.trim()
        .trim_start_matches("Version ")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect())
}

impl AdDc {
    /// The template folder, provisioned if missing or too old.
    pub(super) fn template() -> Result<PathBuf, String> {
        let root = template_root();
        let t = root.join(format!("samba-{}-r{RECIPE}", samba_version()?));
        let fresh = std::fs::metadata(t.join("template.info"))
            .and_then(|m| m.modified())
            .is_ok_and(|m| m.elapsed().unwrap_or_default() < TEMPLATE_MAX_AGE);
        if fresh {
            return Ok(t);
        }
        let _ = writeln!(
            std::io::stderr(),
            "ad_support: provisioning the Samba AD template {} (once; 10-30 s)",
            t.display()
        );
        let started = Instant::now();
        std::fs::create_dir_all(&root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        let base = base_dir();
        let (ip, home) = claim_ip(&base)?;
        let janitor = Self::spawn_janitor(&home, "")?;
        let dc = AdDc {
            ip,
            dir: home.join("dc"),
            home,
            winbind: Winbind::Private,
            samba: Mutex::new(None),
            janitor: Mutex::new(Some(janitor)),
        };
        dc.provision()?;
        dc.start_samba()?;
        dc.populate()?;
        dc.stop();
        dc.backdate_gina()?;
        std::fs::write(
            dc.dir.join("template.info"),
            format!("{}\n{}\n", dc.dir.display(), dc.ip),
        )
        .map_err(|e| format!("template.info: {e}"))?;
        // Two processes may build one at the same time: the first rename wins, the other's copy
        // is dropped.
        let tmp = root.join(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        run(Command::new("cp").arg("-a").arg(&dc.dir).arg(&tmp))?;
        if std::fs::rename(&tmp, &t).is_err() {
            let _ = std::fs::remove_dir_all(&t);
            if std::fs::rename(&tmp, &t).is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        drop(dc);
        let _ = writeln!(
            std::io::stderr(),
            "ad_support: template ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(t)
    }

    fn provision(&self) -> Result<(), String> {
        let d = &self.dir;
        let ip = self.ip;
        for sub in ["run", "log"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| format!("mkdir: {e}"))?;
        }
        write_tls(d, ip)?;
        let dd = d.display();
        let opts = [
            "netbios name=DC1".to_owned(),
            format!("interfaces={ip}/8"),
            "bind interfaces only=yes".into(),
            format!("pid directory={dd}/run"),
            format!("ncalrpc dir={dd}/run/ncalrpc"),
            format!("winbindd socket directory={dd}/run/winbindd"),
            format!("ntp signd socket directory={dd}/run/ntp_signd"),
            format!("log file={dd}/log/log.%m"),
            "logging=file".into(),
            "dns forwarder=".into(),
            "disable spoolss=yes".into(),
            "printcap name=/dev/null".into(),
            "server services=-nbt -wrepl -drepl -kcc -dnsupdate -ntp_signd".into(),
            "dsdb:schema update allowed=true".into(),
            "tls enabled=yes".into(),
            format!("tls keyfile={dd}/tls/key.pem"),
            format!("tls certfile={dd}/tls/cert.pem"),
            format!("tls cafile={dd}/tls/ca.pem"),
        ];
        let mut cmd = Command::new("samba-tool");
        cmd.args(["domain", "provision", "-s", "/dev/null"])
            .arg(format!("--targetdir={dd}"))
            .arg(format!("--realm={REALM}"))
            .arg(format!("--domain={NETBIOS_DOMAIN}"))
            .args([
                "--server-role=dc",
                "--dns-backend=SAMBA_INTERNAL",
                "--use-rfc2307",
            ])
            .arg(format!("--adminpass={ADMIN_PASSWORD}"))
            .args(["--host-name=dc1"])
            .arg(format!("--host-ip={ip}"));
        for o in &opts {
            cmd.arg(format!("--option={o}"));
        }
        let out = run(&mut cmd)?;
        std::fs::write(d.join("provision.log"), out).map_err(|e| format!("provision.log: {e}"))?;
        Ok(())
    }

    /// Users, account states, schema stand-in, service accounts and keytabs (samba-ad-notes §4,
    /// §7, §8), against the running template DC.
    fn populate(&self) -> Result<(), String> {
        let st = |args: &[&str]| self.samba_tool(args);
        st(&[
            "domain",
            "passwordsettings",
            "set",
            "--min-pwd-age=0",
            // Passwords set when the template was made must not expire while it is in use (it is
            // rebuilt after 30 days); gina's back-dated one is years older than this.
            "--max-pwd-age=999",
        ])?;
        for u in [ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GINA, LOCKOUT_USER] {
            let mut args = vec!["user", "create", u, PASSWORD];
            let mail = format!("--mail-address={u}@{DNS_DOMAIN}");
            if u == ALICE {
                args.push(&mail);
            }
            if u == CAROL {
                args.push("--must-change-at-next-login");
            }
            st(&args)?;
        }
        st(&["user", "disable", BOB])?;
        st(&["user", "setexpiry", DAVE, "--days=0"])?;
        st(&["group", "add", SIP_GROUP])?;
        st(&["group", "addmembers", SIP_GROUP, ALICE])?;
        st(&[
            "domain",
            "passwordsettings",
            "pso",
            "create",
            "lockout-fast",
            "1",
            &format!("--account-lockout-threshold={LOCKOUT_THRESHOLD}"),
            "--account-lockout-duration=30",
            "--reset-account-lockout-after=30",
        ])?;
        st(&[
            "domain",
            "passwordsettings",
            "pso",
            "apply",
            "lockout-fast",
            LOCKOUT_USER,
        ])?;
        // msRTCSIP-PrimaryUserAddress is a Lync/Skype schema extension: a stand-in attribute with
        // the same name (made-up OID) so the directory code reads what it would read in real AD.
        let schema = format!(
            "dn: CN=ms-RTC-SIP-PrimaryUserAddress,CN=Schema,CN=Configuration,{BASE_DN}\n\
             changetype: add\nobjectClass: attributeSchema\n\
             lDAPDisplayName: msRTCSIP-PrimaryUserAddress\n\
             attributeID: 1.2.840.113556.1.8000.2554.31337.1.1\nattributeSyntax: 2.5.5.12\n\
             oMSyntax: 64\nisSingleValued: TRUE\nsearchFlags: 1\n\n\
             dn:\nchangetype: modify\nadd: schemaUpdateNow\nschemaUpdateNow: 1\n-\n\n\
             dn: CN=User,CN=Schema,CN=Configuration,{BASE_DN}\nchangetype: modify\n\
             add: mayContain\nmayContain: msRTCSIP-PrimaryUserAddress\n-\n\n\
             dn:\nchangetype: modify\nadd: schemaUpdateNow\nschemaUpdateNow: 1\n-\n\n\
             dn: CN={ALICE},CN=Users,{BASE_DN}\nchangetype: modify\n\
             replace: msRTCSIP-PrimaryUserAddress\nmsRTCSIP-PrimaryUserAddress: {ALICE_SIP}\n-\n\n\
             dn: CN={ERIN},CN=Users,{BASE_DN}\nchangetype: modify\n\
             replace: proxyAddresses\nproxyAddresses: SIP:erin@{DNS_DOMAIN}\n\
             proxyAddresses: SMTP:erin@{DNS_DOMAIN}\n-\n"
        );
        self.ldbmodify(&schema)?;
        for (acct, spn, enctypes) in [
            (SERVICE_ACCOUNT, SERVICE_SPN, 24),
            (SERVICE_ACCOUNT_RC4, SERVICE_SPN_RC4, 4),
        ] {
            st(&["user", "create", acct, "--random-password"])?;
            st(&["spn", "add", spn, acct])?;
            self.ldbmodify(&format!(
                "dn: CN={acct},CN=Users,{BASE_DN}\nchangetype: modify\n\
                 replace: msDS-SupportedEncryptionTypes\nmsDS-SupportedEncryptionTypes: {enctypes}\n-\n"
            ))?;
        }
        // Exported after the enctypes are set: the keys are made when the password is set, and
        // AES keys always exist in sam.ldb; the export takes the ones the account allows.
        let conf = self.smb_conf();
        for (spn, file) in [
            (SERVICE_SPN, "sip.keytab"),
            (SERVICE_SPN_RC4, "sip-rc4.keytab"),
        ] {
            run(Command::new("samba-tool")
                .args(["domain", "exportkeytab"])
                .arg(self.dir.join(file))
                .arg(format!("--principal={spn}"))
                .arg("-s")
                .arg(&conf))?;
        }
        Ok(())
    }

    /// gina's password expired: pwdLastSet can only be back-dated by a local sam.ldb write with
    /// the "allow pwdLastSet" control (samba-ad-notes §4).
    fn backdate_gina(&self) -> Result<(), String> {
        run_with_stdin(
            Command::new("ldbmodify")
                .arg("-H")
                .arg(self.dir.join("private/sam.ldb"))
                .arg("--controls=local_oid:1.3.6.1.4.1.7165.4.3.20:0"),
            &format!(
                "dn: CN={GINA},CN=Users,{BASE_DN}\nchangetype: modify\nreplace: pwdLastSet\n\
                 pwdLastSet: 132223104000000000\n-\n"
            ),
        )
        .map(|_| ())
    }
}
