#include "auth/audit_log.h"

#include "absl/strings/str_cat.h"
#include "auth/crypto.h"
#include "auth/record_codec.h"
#include "storage/keys.h"

namespace stepdb::auth {
namespace {

constexpr uint8_t kEntryVersion = 1;

std::string EntryKey(uint64_t seq) {
  std::string key(1, storage::kAuditTag);
  storage::AppendBigEndian64(seq, &key);
  return key;
}

std::string HeadKey() { return std::string(1, storage::kAuditHeadTag); }

std::string SeqBytes(uint64_t seq) {
  std::string out;
  storage::AppendBigEndian64(seq, &out);
  return out;
}

// The content of an entry: everything but its own hash.
std::string EncodeContent(const AuditEntry& e) {
  RecordWriter w;
  w.U8(kEntryVersion);
  w.I64(e.time_ms);
  w.Str(e.event.token_id);
  w.Str(e.event.rpc);
  w.Str(e.event.project);
  w.Str(e.event.peer);
  w.Str(e.event.outcome);
  w.Str(e.event.detail);
  w.Str(e.prev_hash);
  return w.Release();
}

std::string HashOf(uint64_t seq, std::string_view content) {
  return Sha256({SeqBytes(seq), content});
}

// Parses a stored value (content + 32-byte hash); false if malformed.
bool DecodeEntry(uint64_t seq, std::string_view value, AuditEntry* e,
                 std::string_view* content) {
  if (value.size() < kSha256Size) return false;
  *content = value.substr(0, value.size() - kSha256Size);
  RecordReader r(*content);
  e->seq = seq;
  const uint8_t version = r.U8();
  e->time_ms = r.I64();
  e->event.token_id = r.Str();
  e->event.rpc = r.Str();
  e->event.project = r.Str();
  e->event.peer = r.Str();
  e->event.outcome = r.Str();
  e->event.detail = r.Str();
  e->prev_hash = r.Str();
  e->hash = std::string(value.substr(value.size() - kSha256Size));
  return r.ok() && r.position() == content->size() &&
         version == kEntryVersion;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(
    storage::Engine* engine, Clock clock) {
  std::unique_ptr<AuditLog> log(new AuditLog(engine, std::move(clock)));
  absl::StatusOr<std::optional<std::string>> head = engine->GetMeta(HeadKey());
  if (!head.ok()) return head.status();
  absl::MutexLock lock(&log->mu_);
  if (!head->has_value()) {
    log->last_hash_ = std::string(kSha256Size, '\0');
    return log;
  }
  if ((*head)->size() != 8 + kSha256Size) {
    return absl::DataLossError("audit log head record: corrupt");
  }
  log->last_seq_ = storage::ReadBigEndian64((*head)->data());
  log->last_hash_ = (*head)->substr(8);
  return log;
}

absl::StatusOr<uint64_t> AuditLog::Append(AuditEvent event) {
  absl::MutexLock lock(&mu_);
  AuditEntry e;
  e.seq = last_seq_ + 1;
  e.time_ms = clock_();
  e.event = std::move(event);
  e.prev_hash = last_hash_;
  const std::string content = EncodeContent(e);
  e.hash = HashOf(e.seq, content);
  const storage::MetaWrite writes[] = {
      {EntryKey(e.seq), absl::StrCat(content, e.hash)},
      {HeadKey(), absl::StrCat(SeqBytes(e.seq), e.hash)},
  };
  if (absl::Status s = engine_->WriteMeta(writes); !s.ok()) return s;
  last_seq_ = e.seq;
  last_hash_ = e.hash;
  return e.seq;
}

absl::StatusOr<std::vector<AuditEntry>> AuditLog::Read(uint64_t after_seq,
                                                       size_t limit) const {
  std::vector<AuditEntry> out;
  absl::Status bad;
  absl::Status scan = engine_->ScanMeta(
      std::string(1, storage::kAuditTag),
      [&](std::string_view key, std::string_view value) {
        if (key.size() != 9) return true;  // not ours; Verify reports it
        const uint64_t seq = storage::ReadBigEndian64(key.data() + 1);
        if (seq <= after_seq) return true;
        AuditEntry e;
        std::string_view content;
        if (!DecodeEntry(seq, value, &e, &content)) {
          bad = absl::DataLossError(absl::StrCat("audit entry ", seq, ": corrupt"));
          return false;
        }
        out.push_back(std::move(e));
        return limit == 0 || out.size() < limit;
      });
  if (!scan.ok()) return scan;
  if (!bad.ok()) return bad;
  return out;
}

absl::StatusOr<AuditVerification> AuditLog::Verify() const {
  absl::MutexLock lock(&mu_);
  AuditVerification v;
  std::string prev(kSha256Size, '\0');
  uint64_t expected = 1;
  auto fail = [&](uint64_t seq, std::string message) {
    v.intact = false;
    v.first_bad_seq = seq;
    v.message = std::move(message);
    return false;
  };
  absl::Status scan = engine_->ScanMeta(
      std::string(1, storage::kAuditTag),
      [&](std::string_view key, std::string_view value) {
        if (key.size() != 9) return fail(expected, "malformed entry key");
        const uint64_t seq = storage::ReadBigEndian64(key.data() + 1);
        if (seq != expected) {
          return fail(expected, absl::StrCat("entry ", expected, " is missing"));
        }
        AuditEntry e;
        std::string_view content;
        if (!DecodeEntry(seq, value, &e, &content)) {
          return fail(seq, absl::StrCat("entry ", seq, " does not parse"));
        }
        if (e.prev_hash != prev) {
          return fail(seq, absl::StrCat("entry ", seq,
                                        " does not link to the entry before"));
        }
        if (!ConstantTimeEquals(HashOf(seq, content), e.hash)) {
          return fail(seq, absl::StrCat("entry ", seq,
                                        ": content does not match its hash"));
        }
        prev = e.hash;
        ++v.entries;
        ++expected;
        return true;
      });
  if (!scan.ok()) return scan;
  if (v.intact) {
    absl::StatusOr<std::optional<std::string>> head = engine_->GetMeta(HeadKey());
    if (!head.ok()) return head.status();
    const std::string want = v.entries == 0 ? std::string()
                                            : absl::StrCat(SeqBytes(v.entries), prev);
    if (head->value_or("") != want) {
      fail(expected, "the head record does not name the last entry (entries "
                     "removed from the end?)");
    }
  }
  v.head_hash = HexEncode(prev);
  return v;
}

}  // namespace stepdb::auth
