import cv2, sys, shutil
from pathlib import Path
src = Path('../shared/data'); dst = Path('/work/main/.gpudata')
q = int(sys.argv[1]); pscale = float(sys.argv[2])
shutil.rmtree(dst, ignore_errors=True)
for sub in ('train', 'trainannot', 'val', 'valannot'):
    shutil.copytree(src / 'camvid' / sub, dst / 'camvid' / sub)
lines = [l for l in (src / 'portrait-shen2016/split.txt').read_text().splitlines() if l.split()[1:] == ['train']]
pd = dst / 'portrait'; (pd / 'images').mkdir(parents=True, exist_ok=True); (pd / 'masks').mkdir(exist_ok=True)
(pd / 'split.txt').write_text('\n'.join(lines) + '\n')
for l in lines:
    n = l.split()[0]
    im = cv2.imread(str(src / f'portrait-shen2016/images/{n}.jpg'))
    m = cv2.imread(str(src / f'portrait-shen2016/masks/{n}.png'), cv2.IMREAD_UNCHANGED)
    h, w = im.shape[:2]; size = (round(w * pscale), round(h * pscale))
    cv2.imwrite(str(pd / f'images/{n}.jpg'), cv2.resize(im, size, interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, q])
    cv2.imwrite(str(pd / f'masks/{n}.png'), cv2.resize(m, size, interpolation=cv2.INTER_NEAREST), [cv2.IMWRITE_PNG_COMPRESSION, 9])
print(len(lines))
