/** A PEFT LoRA adapter for a model imported from Hugging Face loads here and gives PyTorch's merged-weight logits. */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAdapter, loadHFModel, LoRAModel, noGrad, saveAdapter, Tensor, writeSafetensors } from '../src/index.js';
import { loadHFCase, tempCheckpointDir, writeHFCheckpoint } from './helpers/hf-fixtures.js';

const fixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'lora', 'mixtral_peft.json'), 'utf8')) as {
  adapter_config: Record<string, unknown>;
  tensors: Array<{ name: string; shape: number[]; data: string }>;
  input_ids: number[][];
  logits: { shape: number[]; data: string };
};
const f32 = (b64: string): Float32Array => {
  const buf = Buffer.from(b64, 'base64');
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
};
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('PEFT adapters on a Hugging Face import', () => {
  it('a PEFT-layout adapter for Mixtral loads and matches PyTorch (W + alpha/r · B A) within 1e-4', async () => {
    const hfDir = tempCheckpointDir('lora-peft');
    dirs.push(hfDir);
    writeHFCheckpoint(hfDir, loadHFCase('mixtral'));
    const { model } = await loadHFModel(hfDir);
    const adapterDir = join(hfDir, 'adapter');
    mkdirSync(adapterDir);
    const dict = Object.fromEntries(fixture.tensors.map((t) => [t.name, new Tensor(f32(t.data), t.shape)]));
    writeFileSync(join(adapterDir, 'adapter_model.safetensors'), writeSafetensors(dict, { format: 'pt' }));
    writeFileSync(join(adapterDir, 'adapter_config.json'), JSON.stringify(fixture.adapter_config));
    const adapter = await loadAdapter(adapterDir);
    expect([...adapter.weights.keys()].sort()).toEqual(['layers.0.self_attn.o_proj', 'layers.0.self_attn.q_proj', 'layers.0.self_attn.v_proj', 'layers.1.self_attn.o_proj', 'layers.1.self_attn.q_proj', 'layers.1.self_attn.v_proj']);
    const lora = new LoRAModel(model, { targets: adapter.targetModules, adapters: [{ name: 'peft', rank: adapter.options.rank, alpha: adapter.options.alpha }] });
    lora.loadAdapterWeights('peft', adapter.weights);
    lora.eval();
    const ids = fixture.input_ids;
    const logits = noGrad(() => lora.forward(Tensor.indices(ids.flat(), [ids.length, ids[0].length])).logits.f32);
    const want = f32(fixture.logits.data);
    let scale = 0;
    for (const v of want) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < want.length; i++) expect(Math.abs(logits[i] - want[i]) / (Math.abs(want[i]) + 1e-2 * scale), `logit ${i}`).toBeLessThan(1e-4);
    // Saved back: the same PEFT names and config, byte-identical tensors.
    const back = join(hfDir, 'adapter-back');
    await saveAdapter(back, lora, 'peft', { family: 'mixtral' });
    const reread = await loadAdapter(back);
    for (const [path, f] of adapter.weights) {
      expect(Array.from(reread.weights.get(path)!.A.f32)).toEqual(Array.from(f.A.f32));
      expect(Array.from(reread.weights.get(path)!.B.f32)).toEqual(Array.from(f.B.f32));
    }
    expect(JSON.parse(readFileSync(join(back, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 4, lora_alpha: 8, target_modules: ['o_proj', 'q_proj', 'v_proj'] });
    lora.detach();
  });

  it('refuses adapters it cannot apply, naming the field or tensor', async () => {
    const dir = tempCheckpointDir('lora-peft-bad');
    dirs.push(dir);
    const write = (cfg: Record<string, unknown>, tensors: Record<string, Tensor>): string => {
      const d = join(dir, `a${Math.random().toString(36).slice(2)}`);
      mkdirSync(d);
      writeFileSync(join(d, 'adapter_config.json'), JSON.stringify(cfg));
      writeFileSync(join(d, 'adapter_model.safetensors'), writeSafetensors(tensors));
      return d;
    };
    const A = Tensor.zeros([2, 4]), B = Tensor.zeros([4, 2]);
    const ok = { 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': A, 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight': B };
    await expect(loadAdapter(write({ r: 0, lora_alpha: 4 }, ok))).rejects.toThrow(/^r=0: adapter_config.json/);
    await expect(loadAdapter(write({ r: 2, peft_type: 'IA3' }, ok))).rejects.toThrow(/peft_type="IA3"/);
    await expect(loadAdapter(write({ r: 2, alpha_pattern: { q_proj: 4 } }, ok))).rejects.toThrow(/alpha_pattern/);
    await expect(loadAdapter(write({ r: 2 }, { ...ok, 'base_model.model.lm_head.lora_A.weight': A }))).rejects.toThrow(/lm_head\.lora_A\.weight.*does not adapt/);
    await expect(loadAdapter(write({ r: 2 }, { 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': A }))).rejects.toThrow(/q_proj\.lora_B\.weight.*missing/);
    await expect(loadAdapter(write({ r: 3 }, ok))).rejects.toThrow(/q_proj\.lora_A\.weight=\[2, 4\].*r=3/);
  });
});
