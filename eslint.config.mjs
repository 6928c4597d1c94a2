// ESLint with typescript-eslint's type-aware rules over every TypeScript folder (`npm run lint`, part of `npm test`).
// Strict where a bug hides (floating and misused promises, `any`, unused code, unsafe stringification); the
// `no-unsafe-*` family is off: JSON at the process and wire boundaries is parsed then narrowed by hand, and those
// rules would ask for a cast at every read of a parsed summary.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/**', 'results/**', 'engine/**', '**/*.mjs', '**/*.js'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        project: ['./tsconfig.json', './tsconfig.scenarios.json'],
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['describe', 'it', 'test', 'before', 'after', 'beforeEach', 'afterEach', 'suite'],
            },
          ],
        },
      ],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true, allowNullish: true, allowArray: true },
      ],
      // WebSocket payloads (ws's RawData, k6's MessageEvent data) are turned into text on purpose.
      '@typescript-eslint/no-base-to-string': [
        'error',
        { ignoredTypeNames: ['Error', 'RegExp', 'URL', 'URLSearchParams', 'RawData', 'Buffer', 'ArrayBuffer'] },
      ],
      // Wrong here more than right: it calls a template-literal key cast or a Buffer slice cast unnecessary, and its
      // fix breaks the build (tsc is the judge of assertions).
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
