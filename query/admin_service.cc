#include "query/admin_service.h"

#include "proto/grpc_status.h"

namespace stepdb::query {

AdminService::AdminService(storage::Engine* engine,
                           auth::Authorizer* authorizer)
    : engine_(engine), authorizer_(authorizer) {}

AdminService::~AdminService() {
  std::thread compactor;
  {
    // The compactor takes mu_ to finish: join it outside the lock.
    absl::MutexLock lock(&mu_);
    compactor = std::move(compactor_);
  }
  if (compactor.joinable()) compactor.join();
}

grpc::ServerUnaryReactor* AdminService::Stats(
    grpc::CallbackServerContext* context, const v1::StatsRequest* /*request*/,
    v1::StatsResponse* response) {
  if (absl::Status s = auth::Check(authorizer_, *context, auth::Rpc::kAdminStats,
                                   auth::kAllProjects);
      !s.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  const storage::EngineStats stats = engine_->Stats();
  response->set_projects(stats.projects);
  response->set_runs(stats.runs);
  response->set_series(stats.series);
  response->set_points(stats.points);
  response->set_head_points(stats.head_points);
  response->set_sealed_chunks(stats.sealed_chunks);
  response->set_bytes_on_disk(stats.bytes_on_disk);
  response->set_bytes_per_point(
      stats.points == 0 ? 0.0
                        : static_cast<double>(stats.bytes_on_disk) / stats.points);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminService::Compact(
    grpc::CallbackServerContext* context, const v1::CompactRequest* /*request*/,
    v1::CompactResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (absl::Status s = auth::Check(authorizer_, *context,
                                   auth::Rpc::kAdminCompact, auth::kAllProjects);
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  auth::AuditAction(authorizer_, *context, auth::Rpc::kAdminCompact, "",
                    absl::OkStatus(), "compaction started");
  absl::MutexLock lock(&mu_);
  if (compacting_) {
    reactor->Finish(grpc::Status(grpc::StatusCode::ABORTED,
                                 "a compaction is already running"));
    return reactor;
  }
  if (compactor_.joinable()) compactor_.join();
  compacting_ = true;
  compactor_ = std::thread([this, reactor, response] {
    auto result = engine_->Compact();
    if (result.ok()) {
      response->set_chunks_sealed(result->chunks_sealed);
      response->set_bytes_on_disk_before(result->bytes_before);
      response->set_bytes_on_disk_after(result->bytes_after);
    }
    {
      absl::MutexLock lock(&mu_);
      compacting_ = false;
    }
    reactor->Finish(result.ok() ? grpc::Status::OK : ToGrpcStatus(result.status()));
  });
  return reactor;
}

}  // namespace stepdb::query
