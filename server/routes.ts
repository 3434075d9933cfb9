/**
 * Every route Pigeon serves, in one table: find any endpoint here, then its handler in the domain named beside it.
 * Each domain declares its routes as data (server/http/table.ts); app.ts serves this table once, behind the
 * middleware every request passes (request id, logs, metrics, load shedding, security headers, compression) and,
 * by path prefix, authentication: `/v1` needs a token and passes the device gate, `/admin` needs an
 * administrator's token, `/account/v1` any user's (both also take the web pages' session cookie: server/web/).
 * Everything else here is public. The hot reads (FAST below) are also served by the fast
 * lane in front of Express (http/fastLane.ts), with the same checks and the same answers.
 */
import type { Config } from './config';
import type { Route } from './http/table';
import { opsRoutes, type Pingable } from './http/ops';
import { authRoutes, type AuthRoutesOptions } from './identity/routes';
import { sessionRoutes } from './session/routes';
import { deviceRoutes } from './devices/routes';
import { accountRoutes } from './web/accountRoutes';
import type { DeviceService } from './devices/service';
import { syncRoutes, type SyncRouteDeps } from './sync/routes';
import { contentRoutes } from './content/routes';
import { searchRoutes } from './search/routes';
import type { SearchService } from './search/service';
import { sendRoutes } from './send/routes';
import type { SendService } from './send/service';
import { adminRoutes } from './admin/routes';
import type { AdminService } from './admin/service';
import { adminMessageRoutes } from './admin/messages';
import type { Importer } from './mail/import';
import type { Regions } from './regions';
import { appPolicyRoutes, type AppPolicyRouteDeps } from './access/routes';
import { accessAdminRoutes } from './access/adminRoutes';
import type { AccessAdmin } from './access/admin';
import { complianceRoutes, type ComplianceRouteDeps } from './access/complianceRoutes';
import { protectionRoutes, type ProtectionRouteDeps } from './protection/routes';
import { calendarRoutes } from './calendar/routes';
import { contactRoutes } from './contacts/routes';
import { directoryRoutes } from './directory/routes';
import type { DirectoryService } from './directory/service';
import type { ContactService } from './contacts/service';
import type { CalendarService } from './calendar/service';
import { mailboxRoutes, type MailboxRouteDeps } from './mailbox/routes';
import { sharedMailboxRoutes, type SharedMailboxes } from './mailbox/shared';
import { requireSendAs } from './http/mailbox';
import { conversationRoutes } from './conversations/routes';
import type { ConversationService } from './conversations/service';
import type { createConversationSync } from './conversations/sync';
import { resyncRoutes } from './sync/resyncRoutes';
import { diagnosticsRoutes, type DiagnosticsRouteDeps } from './diagnostics/routes';
import type { createResync } from './sync/resync';

export interface RouteDeps {
  config: Config;
  regions: Regions;
  ready: Pingable;
  auth: AuthRoutesOptions;
  devices: DeviceService;
  sync: SyncRouteDeps;
  push: Route[];
  /** GET /v1/push/config, GET|POST /v1/push/channels, DELETE /v1/push/channels/:channelId (server/push/background/routes.ts). */
  backgroundPush: Route[];
  search: SearchService;
  send: SendService;
  admin: AdminService;
  importer: Importer;
  appPolicy: AppPolicyRouteDeps;
  accessAdmin: AccessAdmin;
  compliance: ComplianceRouteDeps;
  protection: ProtectionRouteDeps;
  calendar: CalendarService;
  contacts: ContactService;
  directory: DirectoryService;
  mailbox: MailboxRouteDeps;
  shared: SharedMailboxes;
  conversations: { conversations: ConversationService; syncConversations: ReturnType<typeof createConversationSync> };
  resync: ReturnType<typeof createResync>;
  diagnostics: DiagnosticsRouteDeps;
}

/** The hot reads the fast lane serves without the Express chain (http/fastLane.ts): the polls and the session call. */
const FAST = ['GET /v1/session', 'GET /v1/folders/sync', 'GET /v1/folders/:folderId/items/sync', 'GET /v1/folders/:folderId/conversations/sync'];

/**
 * The paths that act on mailbox data: they accept `X-Mailbox` to work in a shared mailbox (http/mailbox.ts). Every
 * other route refuses the header.
 */
const MAILBOX_PATHS = [
  '/v1/folders',
  '/v1/items',
  '/v1/batch',
  '/v1/search',
  '/v1/messages/',
  '/v1/calendar/',
  '/v1/contacts',
  '/v1/conversations/',
  '/v1/mailbox/',
];

export function routeTable(d: RouteDeps): Route[] {
  const routes: Route[] = [
    // Public: GET /healthz, /readyz, /openapi.yaml (metrics have their own listener: http/metricsServer.ts).
    ...opsRoutes(d.ready),
    // Public: POST /oauth2/token, /oauth2/revoke (shared with the identity provider, whose other endpoints it serves
    // itself: identity/routes.ts providerEndpoints).
    ...authRoutes(d.auth),

    // GET /v1/session
    ...sessionRoutes(d.config, d.regions, d.devices),
    // GET|POST /v1/devices, POST /v1/devices/current/wipe-ack, DELETE /v1/devices/:deviceId
    ...deviceRoutes(d.devices),
    // GET /v1/folders/sync, POST /v1/folders, PATCH|DELETE /v1/folders/:folderId,
    // GET /v1/folders/:folderId/items/sync, GET|PATCH|DELETE /v1/items/:itemId, POST /v1/items/:itemId/move,
    // POST /v1/batch
    ...syncRoutes(d.sync),
    // POST /v1/folders/:folderId/items/resync (a resync that keeps the app's cache: server/sync/resync.ts)
    ...resyncRoutes({ mail: d.sync.mail, resync: d.resync, protection: d.sync.protection, onItemsSynced: d.sync.onItemsSynced }),
    // GET /v1/folders/:folderId/conversations/sync, POST /v1/conversations/:conversationId/actions
    // (server/conversations/)
    ...conversationRoutes({ ...d.conversations, mail: d.sync.mail }),
    // GET /v1/items/:itemId/attachments/:attachmentId, GET /v1/items/:itemId/mime
    ...contentRoutes(d.sync.content),
    // GET /v1/events, POST /v1/ping (server/push/routes.ts)
    ...d.push,
    // GET /v1/push/config, GET|POST /v1/push/channels, DELETE /v1/push/channels/:channelId (background push:
    // server/push/background/routes.ts)
    ...d.backgroundPush,
    // GET /v1/search
    ...searchRoutes(d.search, d.protection.protection),
    // POST /v1/messages/send, POST /v1/messages/send-mime
    ...sendRoutes({ send: d.send, maxMessageBytes: d.config.maxMessageBytes }),
    // GET /v1/protection, GET|POST /v1/me/certificates, DELETE /v1/me/certificates/:certificateId,
    // GET /v1/directory/certificates, GET|PUT /admin/v1/protection, GET /admin/v1/protection/keys,
    // POST /admin/v1/protection/keys/rotate (server/protection/routes.ts)
    ...protectionRoutes(d.protection),
    // POST /v1/calendar/events, PUT|DELETE /v1/calendar/events/:itemId, POST /v1/calendar/events/:itemId/respond,
    // POST /v1/calendar/events/:itemId/decline-counter, POST /v1/calendar/batch, GET /v1/calendar/view,
    // GET /v1/calendar/feed.ics (server/calendar/routes.ts)
    ...calendarRoutes(d.calendar),
    // POST /v1/contacts, POST /v1/contacts/import, GET /v1/contacts/export.vcf, PUT /v1/contacts/:itemId,
    // PUT|DELETE /v1/contacts/:itemId/photo (server/contacts/routes.ts)
    ...contactRoutes(d.contacts),
    // GET /v1/people, GET /v1/people/:userId, GET /v1/people/:userId/organization, GET|PUT
    // /admin/v1/users/:userId/directory, POST /admin/v1/directory/import (server/directory/routes.ts)
    ...directoryRoutes({ directory: d.directory, admin: d.admin }),
    // GET /v1/mailbox/settings, PUT /v1/mailbox/settings/automatic-replies, PUT /v1/mailbox/settings/junk,
    // DELETE /v1/mailbox/settings/focused-overrides, POST /v1/items/:itemId/classify, POST
    // /v1/items/:itemId/report-junk, GET|PUT /v1/devices/current/view-settings (server/mailbox/routes.ts)
    ...mailboxRoutes(d.mailbox),
    // GET /v1/mailboxes, GET|POST /admin/v1/shared-mailboxes, GET /admin/v1/shared-mailboxes/:mailboxId,
    // PUT|DELETE /admin/v1/shared-mailboxes/:mailboxId/members/:userId (server/mailbox/shared.ts)
    ...sharedMailboxRoutes({ shared: d.shared, admin: d.admin }),
    // GET /v1/policy, POST /v1/policy/check-in, POST /v1/policy/selective-wipe-ack (app protection)
    ...appPolicyRoutes(d.appPolicy),
    // POST|GET /v1/diagnostics, GET /v1/diagnostics/:incidentId, GET /admin/v1/diagnostics/:incidentId,
    // GET /admin/v1/diagnostics/:incidentId/bundle (server/diagnostics/routes.ts)
    ...diagnosticsRoutes(d.diagnostics),
    // Public, signed by a compliance partner: PUT /compliance/v1/devices/:deviceId
    ...complianceRoutes(d.compliance),

    // GET /admin/v1/devices, GET|DELETE /admin/v1/devices/:id, POST /admin/v1/devices/:id/:action,
    // GET|POST /admin/v1/device-access-rules, GET|PUT|DELETE /admin/v1/device-access-rules/:id,
    // GET|PUT /admin/v1/device-access-default, GET /admin/v1/audit
    ...adminRoutes(d.admin, d.devices),
    // GET /account/v1/devices, POST /account/v1/devices/:id/wipe, DELETE /account/v1/devices/:id ("My devices":
    // server/web/accountRoutes.ts)
    ...accountRoutes(d.devices),
    // POST /admin/v1/users/:id/messages
    ...adminMessageRoutes({ importer: d.importer, maxMessageBytes: d.config.maxMessageBytes }),
    // GET|POST /admin/v1/{conditional-access/policies,named-locations,groups,app-protection-policies},
    // GET|PUT|DELETE the same /:id, GET|PUT /admin/v1/approved-client-apps, POST /admin/v1/conditional-access/what-if,
    // GET /admin/v1/sign-ins, POST /admin/v1/users/:id/risk
    ...accessAdminRoutes({ admin: d.admin, accessAdmin: d.accessAdmin, access: d.appPolicy.access }),
  ];
  for (const key of FAST) {
    const route = routes.find((r) => `${r.method} ${r.path}` === key);
    if (!route) throw new Error(`route table: the fast route ${key} is not in the table`);
    route.fast = true;
  }
  for (const route of routes) {
    if (!MAILBOX_PATHS.some((prefix) => route.path.startsWith(prefix))) continue;
    route.mailbox = true;
    // A calendar change may mail invitations from the mailbox: in a shared mailbox that needs send-as.
    if (route.path.startsWith('/v1/calendar/') && route.method !== 'GET') {
      const handler = route.handler;
      route.handler = (call) => {
        requireSendAs(call);
        return handler(call);
      };
    }
  }
  return routes;
}
