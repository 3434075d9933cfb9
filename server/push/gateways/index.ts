export * from './types';
export { PushGatewayConfigError, PushTimeoutError } from './common';
export { createWebPushGateway, generateVapidKeys, webPushTopic, type WebPushGatewayOptions, type VapidDetails } from './webPush';
export { createApnsGateway, apnsCollapseId, type ApnsGatewayOptions } from './apns';
export { createFcmGateway, type FcmGatewayOptions, type FcmServiceAccount } from './fcm';
