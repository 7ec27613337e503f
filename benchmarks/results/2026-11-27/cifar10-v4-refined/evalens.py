import sys, numpy as np, torch, onnxruntime as ort
from agilenn.models.bundle import load_bundle
from agilenn.training.onnx_torch import OnnxModule
from agilenn.codec.quantize import quantize, dequantize
torch.set_num_threads(2)
B='/work/main/models/repository/agilenn-cifar10/4'
b=load_bundle(B); d=np.load('data.npz'); xte=b.preprocess(d['xte']); y=d['yte']
dev=ort.InferenceSession(B+'/device.onnx', providers=['CPUExecutionProvider'])
cent=np.asarray(b.manifest['quantizer']['centroids'],np.float32)
ll,rf=dev.run(['local_logits','remote_features'],{'image':xte}); q=dequantize(quantize(rf,cent),cent)
orig=OnnxModule(B+'/remote.onnx'); ref=OnnxModule(B+'/remote.onnx', trainable=True)
ck=torch.load(sys.argv[1], weights_only=False); 
sd = ck['remote']
# probe checkpoints used c<i> names too
ref.load_state_dict(sd)
with torch.no_grad():
    qt=torch.from_numpy(q); ro=torch.cat([orig(qt[i:i+1000]) for i in range(0,10000,1000)]).numpy(); rr=torch.cat([ref(qt[i:i+1000]) for i in range(0,10000,1000)]).numpy()
acc=lambda z:(z.argmax(1)==y).mean()
print('remote orig',acc(ro),'refined',acc(rr),'ens',acc((ro+rr)/2))
for a in [0.2,0.25,0.28,0.3,0.32,0.35,0.4]:
    print(a, 'orig',acc(a*ll+(1-a)*ro),'refined',acc(a*ll+(1-a)*rr),'ens',acc(a*ll+(1-a)*(ro+rr)/2))
