// A Telegram Bot API server on loopback (telegram-test-api), for the
// channel tests: `node telegram.js PORT`. Prints "ready" when listening.
const TelegramServer = require('telegram-test-api');

const port = Number(process.argv[2]);
const server = new TelegramServer({ port, host: '127.0.0.1', storeTimeout: 600 });
server.start().then(() => console.log('ready'));
process.on('SIGTERM', () => server.stop().then(() => process.exit(0)));
