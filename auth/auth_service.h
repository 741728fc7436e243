// The gRPC Auth service: token administration and the audit log.
#ifndef STEPDB_AUTH_AUTH_SERVICE_H_
#define STEPDB_AUTH_AUTH_SERVICE_H_

#include "auth/retention.h"
#include "auth/token_authorizer.h"
#include "stepdb/v1/stepdb.grpc.pb.h"

namespace stepdb::auth {

class AuthService final : public v1::Auth::CallbackService {
 public:
  // Both must outlive the service. A null `authorizer` (auth off) makes the
  // token and audit RPCs fail with FAILED_PRECONDITION; a null `retention`
  // the retention RPCs.
  AuthService(TokenAuthorizer* authorizer, RetentionPolicies* retention)
      : authorizer_(authorizer), retention_(retention) {}

  grpc::ServerUnaryReactor* CreateToken(
      grpc::CallbackServerContext* context,
      const v1::CreateTokenRequest* request,
      v1::CreateTokenResponse* response) override;
  grpc::ServerUnaryReactor* ListTokens(grpc::CallbackServerContext* context,
                                       const v1::ListTokensRequest* request,
                                       v1::ListTokensResponse* response) override;
  grpc::ServerUnaryReactor* RevokeToken(
      grpc::CallbackServerContext* context,
      const v1::RevokeTokenRequest* request,
      v1::RevokeTokenResponse* response) override;
  grpc::ServerUnaryReactor* ReadAudit(grpc::CallbackServerContext* context,
                                      const v1::ReadAuditRequest* request,
                                      v1::ReadAuditResponse* response) override;
  grpc::ServerUnaryReactor* SetRetention(grpc::CallbackServerContext* context,
                                         const v1::RetentionPolicy* request,
                                         v1::RetentionPolicy* response) override;
  grpc::ServerUnaryReactor* GetRetention(
      grpc::CallbackServerContext* context,
      const v1::GetRetentionRequest* request,
      v1::RetentionPolicy* response) override;
  grpc::ServerUnaryReactor* EnforceRetention(
      grpc::CallbackServerContext* context,
      const v1::EnforceRetentionRequest* request,
      v1::EnforceRetentionResponse* response) override;

 private:
  TokenAuthorizer* const authorizer_;
  RetentionPolicies* const retention_;
};

}  // namespace stepdb::auth

#endif  // STEPDB_AUTH_AUTH_SERVICE_H_
