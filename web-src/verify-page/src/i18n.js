// The page's two languages: Simplified Chinese (the home market) and English (export).
// Messages are looked up by key; values that come from a certificate are never
// translated, only the words around them (the signed payload holds machine codes).

export const LANGUAGES = ["zh-CN", "en"];

const MESSAGES = {
  en: {
    "page.title": "Check a phone wipe certificate",
    "page.lead": "This page checks, on your own device, that a wipe certificate is genuine and shows what was done to the phone.",
    "lang.switch": "中文",
    "state.loading": "Loading…",
    "state.checking": "Checking the certificate…",
    "state.ok": "Genuine certificate",
    "state.ok.detail": "The signature, the station that signed it and its organisation's root all check out.",
    "state.bad": "This certificate could NOT be verified",
    "state.bad.detail": "Do not rely on it. Reason:",
    "state.idle": "Scan the QR code on a certificate, or open a saved certificate file below.",
    "dev.banner": "Development certificate: made on a test set-up. It is not proof that a phone was erased.",
    "dev.root": "This page trusts a DEVELOPMENT root: nothing it shows is proof of erasure.",
    "outcome.erased": "Your data was erased",
    "outcome.erased.text": "All user data on this phone was erased, and a check on the phone afterwards confirmed it is gone.",
    "outcome.erased_with_exceptions": "Erased, with exceptions",
    "outcome.erased_with_exceptions.text": "The data was erased and the erase was checked, with the exceptions listed below.",
    "outcome.not_erased": "NOT erased",
    "outcome.not_erased.text": "This phone was not erased. The reasons are listed below.",
    "fact.phone": "Phone",
    "fact.serial": "Serial number ends in",
    "fact.imei": "IMEI ends in",
    "fact.date": "Erased on",
    "fact.date.not_erased": "Checked on",
    "fact.method": "How",
    "fact.manual": "A technician reset the phone by hand, guided and checked by the station.",
    "method.android.testharness": "Factory reset started by the station (Android Test Harness Mode); the phone's storage is encrypted, so resetting it destroys the keys to the data.",
    "method.android.manual_reset": "Factory reset done by a technician, guided and checked by the station.",
    "method.ios.mobilebackup2_erase": "\u201cErase All Content and Settings\u201d started by the station; it destroys the iPhone's data encryption keys.",
    "method.ios.mcinstall_erase": "\u201cErase All Content and Settings\u201d started by the station (managed iPhone); it destroys the data encryption keys.",
    "fact.category": "Standard (NIST SP 800-88)",
    "category.purge": "Purge: the data cannot be recovered, even in a laboratory.",
    "category.clear": "Clear: the data cannot be recovered with ordinary tools.",
    "category.none": "none",
    "fact.handoff": "Handed on as",
    "handoff.restore.completed": "Settings put back and USB debugging turned off by the station, each value checked on the phone.",
    "handoff.final_reset.completed": "Reset once more to its out-of-box state by the technician (confirmed by the technician, not checked by the station).",
    "handoff.failed": "The hand-off did not complete: see the exceptions.",
    "fact.station": "Station",
    "fact.organisation": "Organisation",
    "fact.reasons": "Why not erased",
    "fact.exceptions": "Exceptions",
    "fact.certificate": "Certificate",
    "ledger.problems": "Note: the platform found a problem in this station's records around this certificate ({problems}). The certificate itself is genuine; ask the organisation about it.",
    "details.summary": "Details for auditors",
    "details.signature": "Signature",
    "details.chain": "Certificate chain (station first)",
    "details.root": "Trusted root",
    "details.valid": "valid",
    "details.checks": "Checks after the erase",
    "details.preconditions": "Checks before the erase",
    "details.locks": "Locks",
    "details.ledger": "Station ledger",
    "details.payload": "Signed content (JSON)",
    "details.reason": "Reason code",
    "details.sha256": "SHA-256 of the file",
    "drop.title": "Check a saved certificate file",
    "drop.text": "Drop a certificate file (.jws) here, or choose one. It is checked on this device and never uploaded.",
    "drop.button": "Choose a file",
    "trust.footer": "Checked against the root of trust of {organisation} (SHA-256 {fingerprint}), served by this platform.",
    "trust.none": "No root of trust is configured on this platform.",
    "fetch.failed": "The certificate could not be fetched from the platform ({status}). Check your connection and try again.",
    "reason.not_found": "The platform holds no certificate with this id and hash. The link may be mistyped or altered.",
    "reason.rate_limited": "Too many checks from this network just now. Please wait a minute and try again.",
    "reason.fetch_failed": "The platform could not be reached.",
    "reason.hash_mismatch": "The certificate received is not the one the link names (its fingerprint differs).",
    "reason.id_mismatch": "The certificate received has another id than the link names.",
    "reason.no_roots": "This platform has no root of trust configured, so nothing can be verified.",
    "reason.too_large": "The file is too large to be a certificate.",
    "reason.malformed": "The file is not a certificate (it is damaged or of another kind).",
    "reason.not_canonical": "The file is a re-encoded copy of a certificate, not the original.",
    "reason.unsupported_alg": "The certificate uses a signature method that is not allowed.",
    "reason.bad_header": "The certificate's header is not valid.",
    "reason.chain_invalid": "The certificate's signer credentials are damaged.",
    "reason.unsupported_key": "The station's key is of a kind that is not allowed.",
    "reason.alg_mismatch": "The signature method does not match the station's key.",
    "reason.kid_mismatch": "The certificate names another key than the station's.",
    "reason.signature_not_canonical": "The signature is in a non-standard form (it may have been altered).",
    "reason.bad_signature": "The signature does not match: the content was changed after signing.",
    "reason.chain_order": "The signer credentials are in the wrong order.",
    "reason.chain_broken": "The station's credentials were not issued by the organisation.",
    "reason.untrusted_root": "It was not signed under a root this platform trusts (wrong organisation or a forgery).",
    "reason.key_usage": "A credential in the chain is not allowed to sign certificates like this.",
    "reason.path_length": "The chain is longer than the organisation's root allows.",
    "reason.name_constraints": "The chain carries name constraints, which this page cannot check. Use `wipeagent verify`.",
    "reason.unknown_critical_extension": "A credential in the chain carries a rule this page does not understand.",
    "reason.station_mismatch": "It was signed by another station than the one it names.",
    "reason.cert_not_yet_valid": "The station's credentials were not yet valid when it was signed.",
    "reason.cert_expired": "The station's credentials had expired when it was signed.",
    "reason.issued_in_future": "It claims to be issued in the future.",
    "reason.invalid_time": "It contains a date that does not exist.",
    "reason.schema_invalid": "Its content does not have the required form.",
    "reason.inconsistent_payload": "Its content contradicts itself (for example \"erased\" without a passing check).",
    "reason.development_mismatch": "It was signed with test credentials but does not say so.",
    "reason.unhandled_input": "The file could not be checked.",
  },
  "zh-CN": {
    "page.title": "核验手机数据清除证书",
    "page.lead": "本页面在您自己的设备上核验数据清除证书是否真实，并说明对手机做了什么。",
    "lang.switch": "English",
    "state.loading": "正在加载…",
    "state.checking": "正在核验证书…",
    "state.ok": "证书真实有效",
    "state.ok.detail": "签名、签发工位及其所属机构的根证书均核验通过。",
    "state.bad": "此证书未能通过核验",
    "state.bad.detail": "请勿信赖此证书。原因：",
    "state.idle": "请扫描证书上的二维码，或在下方打开已保存的证书文件。",
    "dev.banner": "开发测试证书：由测试环境生成，不能证明手机已被清除。",
    "dev.root": "本页面信任的是开发测试根证书：所显示内容均不能作为清除证明。",
    "outcome.erased": "您的数据已被清除",
    "outcome.erased.text": "这部手机上的所有用户数据已被清除，清除后在手机上的检查确认数据已不存在。",
    "outcome.erased_with_exceptions": "已清除（有例外）",
    "outcome.erased_with_exceptions.text": "数据已被清除并经过检查，但有下列例外情况。",
    "outcome.not_erased": "未清除",
    "outcome.not_erased.text": "这部手机未被清除，原因如下。",
    "fact.phone": "手机",
    "fact.serial": "序列号末尾",
    "fact.imei": "IMEI 末尾",
    "fact.date": "清除日期",
    "fact.date.not_erased": "检查日期",
    "fact.method": "清除方式",
    "fact.manual": "由技术人员在工位引导和检查下手动重置手机。",
    "method.android.testharness": "由工位发起恢复出厂设置（Android 测试框架模式）；手机存储已加密，重置会销毁数据的密钥。",
    "method.android.manual_reset": "由技术人员在工位引导和检查下恢复出厂设置。",
    "method.ios.mobilebackup2_erase": "由工位发起“抹掉所有内容和设置”，销毁 iPhone 的数据加密密钥。",
    "method.ios.mcinstall_erase": "由工位发起“抹掉所有内容和设置”（受管理的 iPhone），销毁数据加密密钥。",
    "fact.category": "标准（NIST SP 800-88）",
    "category.purge": "净化（Purge）：即使在实验室中也无法恢复数据。",
    "category.clear": "清除（Clear）：使用普通工具无法恢复数据。",
    "category.none": "无",
    "fact.handoff": "交付状态",
    "handoff.restore.completed": "工位已恢复设置并关闭 USB 调试，每项均已在手机上核对。",
    "handoff.final_reset.completed": "技术员已再次将手机恢复到出厂状态（由技术员确认，工位未核对）。",
    "handoff.failed": "交付未完成：见例外情况。",
    "fact.station": "工位",
    "fact.organisation": "机构",
    "fact.reasons": "未清除的原因",
    "fact.exceptions": "例外情况",
    "fact.certificate": "证书",
    "ledger.problems": "注意：平台在该工位此证书附近的记录中发现问题（{problems}）。证书本身是真实的；请向该机构询问。",
    "details.summary": "审计详情",
    "details.signature": "签名",
    "details.chain": "证书链（工位证书在前）",
    "details.root": "信任的根证书",
    "details.valid": "有效期",
    "details.checks": "清除后的检查",
    "details.preconditions": "清除前的检查",
    "details.locks": "锁定状态",
    "details.ledger": "工位台账",
    "details.payload": "签名内容（JSON）",
    "details.reason": "原因代码",
    "details.sha256": "文件 SHA-256",
    "drop.title": "核验已保存的证书文件",
    "drop.text": "将证书文件（.jws）拖放到此处，或选择文件。文件只在本设备上核验，不会上传。",
    "drop.button": "选择文件",
    "trust.footer": "依据 {organisation} 的信任根证书核验（SHA-256 {fingerprint}），由本平台提供。",
    "trust.none": "本平台未配置信任根证书。",
    "fetch.failed": "无法从平台获取证书（{status}）。请检查网络后重试。",
    "reason.not_found": "平台上没有与此编号和哈希值对应的证书。链接可能输错或被篡改。",
    "reason.rate_limited": "此网络的核验次数过多，请稍等一分钟后重试。",
    "reason.fetch_failed": "无法连接平台。",
    "reason.hash_mismatch": "收到的证书与链接所指的不是同一份（指纹不同）。",
    "reason.id_mismatch": "收到的证书编号与链接中的不一致。",
    "reason.no_roots": "本平台未配置信任根证书，无法核验。",
    "reason.too_large": "文件太大，不可能是证书。",
    "reason.malformed": "该文件不是证书（已损坏或为其他类型）。",
    "reason.not_canonical": "该文件是证书的重新编码副本，不是原件。",
    "reason.unsupported_alg": "证书使用了不允许的签名方式。",
    "reason.bad_header": "证书头部无效。",
    "reason.chain_invalid": "证书的签名者凭证已损坏。",
    "reason.unsupported_key": "工位密钥类型不被允许。",
    "reason.alg_mismatch": "签名方式与工位密钥不符。",
    "reason.kid_mismatch": "证书指明的密钥不是工位的密钥。",
    "reason.signature_not_canonical": "签名格式不规范（可能被改动过）。",
    "reason.bad_signature": "签名不匹配：内容在签名后被改动过。",
    "reason.chain_order": "签名者凭证顺序错误。",
    "reason.chain_broken": "工位凭证并非由该机构签发。",
    "reason.untrusted_root": "证书不是在本平台信任的根证书下签发的（机构不符或为伪造）。",
    "reason.key_usage": "证书链中的凭证无权签发此类证书。",
    "reason.path_length": "证书链长度超出机构根证书的允许范围。",
    "reason.name_constraints": "证书链含有本页面无法检查的名称约束，请使用 wipeagent verify。",
    "reason.unknown_critical_extension": "证书链中的凭证含有本页面无法理解的规则。",
    "reason.station_mismatch": "证书由另一个工位签名，而非其所声明的工位。",
    "reason.cert_not_yet_valid": "签名时工位凭证尚未生效。",
    "reason.cert_expired": "签名时工位凭证已过期。",
    "reason.issued_in_future": "证书声称的签发时间在未来。",
    "reason.invalid_time": "证书中含有不存在的日期。",
    "reason.schema_invalid": "证书内容格式不符合要求。",
    "reason.inconsistent_payload": "证书内容自相矛盾（例如声称“已清除”却没有通过的检查）。",
    "reason.development_mismatch": "证书使用测试凭证签名，却未注明。",
    "reason.unhandled_input": "无法核验此文件。",
  },
};

/** The language to start in: ?lang=, then the browser's preferences, then Chinese. */
export function initialLanguage(search, preferences) {
  const asked = new URLSearchParams(search).get("lang");
  if (asked && LANGUAGES.includes(asked)) return asked;
  for (const pref of preferences || []) {
    const lower = pref.toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "zh-CN";
}

/** A translator for `lang`: t(key, {name: value}) with {name} placeholders;
 * t.has(key) says whether a key exists (for machine codes from a certificate). */
export function translator(lang) {
  const table = MESSAGES[lang] || MESSAGES.en;
  const t = (key, values = {}) => {
    const text = table[key] ?? MESSAGES.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
  };
  t.has = (key) => Object.prototype.hasOwnProperty.call(MESSAGES.en, key);
  return t;
}

/** Whether both catalogues define every key (checked by the tests). */
export function missingKeys() {
  const en = Object.keys(MESSAGES.en);
  const zh = Object.keys(MESSAGES["zh-CN"]);
  return [...en.filter((k) => !zh.includes(k)), ...zh.filter((k) => !en.includes(k))];
}

/** A date for people, in their language (Intl, the browser's own formatter). */
export function formatDate(date, lang) {
  // dateStyle cannot be combined with timeZoneName: the zone is named by hand.
  return new Intl.DateTimeFormat(lang, { dateStyle: "long", timeStyle: "short", timeZone: "UTC" })
    .format(date) + " UTC";
}
